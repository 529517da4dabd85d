# Differential privacy (src/dp): the RDP accountant, the CSPRNG, the
# discrete Gaussian noise and Bernoulli sampling.
eml_add_test(test_dp LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_dp.c)
