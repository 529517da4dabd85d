# The attested inference server inside the enclave: RA-TLS, predictions,
# batching, limits (test_serve, cmocka, OpenSSL clients over memory).
eml_add_test(test_serve LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_serve.c)

# The server end to end: a real `enclaveml serve` (sim enclave), clients
# that check its attestation, curl with the pin, the limits (test_serve_cli).
add_test(NAME test_serve_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_serve.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR})
set_tests_properties(test_serve_cli PROPERTIES LABELS "enclave"
                     TIMEOUT 300)
