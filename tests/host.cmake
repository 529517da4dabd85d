# Host modules without an end-to-end test of their own: the CLI's option
# parsers, the key files, the mirror pool store (test_host, cmocka).
eml_add_test(test_host LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_host.c)
