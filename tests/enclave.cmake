# The enclave boundary: the sandboxed sim enclave process, the ecall codec
# and its hostile-input handling (test_enclave, cmocka); confidential
# training end to end with leak and tampering checks (test_enclave_cli);
# and the build-time check that trusted code calls no file, network,
# process or printing functions (test_trusted_symbols).
eml_add_test(test_enclave LABELS enclave TIMEOUT 300
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_enclave.c)
add_dependencies(test_enclave enclaveml-enclave)

add_test(NAME test_enclave_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_enclave.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR})
set_tests_properties(test_enclave_cli PROPERTIES LABELS "enclave"
                     TIMEOUT 300)

add_test(NAME test_trusted_symbols
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_trusted_symbols.sh
                 $<TARGET_FILE:eml_trusted>)
set_tests_properties(test_trusted_symbols PROPERTIES LABELS "unit"
                     TIMEOUT 60)

# A hostile host that speaks the boundary protocol itself against the real
# sandboxed enclave (test_evil_host, cmocka).
eml_add_test(test_evil_host LABELS enclave TIMEOUT 300
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_evil_host.c)
add_dependencies(test_evil_host enclaveml-enclave)
