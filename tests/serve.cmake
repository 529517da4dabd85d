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

# The queue's entries, key wrapping and the front end's never-twice rule
# (test_queue, cmocka).
eml_add_test(test_queue LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_queue.c)

# Scale-out through Redis Streams end to end: its own redis-server, a
# front end with --queue and two serve-workers (sim enclaves), tampered
# entries, a refused worker, a worker SIGKILLed mid-run, 504
# (test_queue_cli).
add_test(NAME test_queue_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_queue.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR})
set_tests_properties(test_queue_cli PROPERTIES LABELS "enclave"
                     TIMEOUT 300)
