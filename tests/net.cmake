eml_add_test(test_net LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_net.c)
