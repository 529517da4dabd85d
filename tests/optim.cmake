# The optimisers' arithmetic and the learning-rate policies (test_optim,
# cmocka).
eml_add_test(test_optim LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_optim.c)
