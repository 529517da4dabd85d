# Kernel tables: reference gradients against finite differences, every fast
# op against its reference, the GEMM dispatch point.
eml_add_test(test_kernels LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_kernels.c)
