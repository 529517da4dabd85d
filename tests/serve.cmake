# The attested inference server inside the enclave: RA-TLS, predictions,
# batching, limits (test_serve, cmocka, OpenSSL clients over memory).
eml_add_test(test_serve LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_serve.c)
