eml_add_test(test_mirror LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_mirror.c)
