eml_add_test(test_darknet LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_darknet.c)
