# The spend ledger and the grant format (test_ledger, cmocka).
eml_add_test(test_ledger LABELS unit;kat
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_ledger.c)
