# The boundary's table and codec (src/boundary/): every message of edl.h
# round trips, every bound is enforced on both sides, short and long frames
# and other versions are refused, seqs; docs/enclave.md's message list is
# the table's (test_boundary, cmocka).
eml_add_test(test_boundary LABELS unit TIMEOUT 120
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_boundary.c)
