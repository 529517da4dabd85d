eml_add_test(test_quant LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_quant.c)
