# Outsourcing's arithmetic and the client's checks without sockets: Z_p,
# the field GEMM, fixed point, Freivalds' false-accept rate measured, and
# 1,200 injected faults caught (test_outsource, cmocka).
eml_add_test(test_outsource LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_outsource.c)
