eml_add_test(test_scatter LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_scatter.c)
