# Decentralized learning's trusted parts: topologies, partitions, sharing,
# Metropolis-Hastings averaging, the channel between enclaves.
eml_add_test(test_decentral LABELS "unit;decentral"
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decentral.c)

# End to end: real `enclaveml node` processes over ZeroMQ on loopback
# (--enclave none), faults (a node that never comes, one SIGKILLed), bad
# input (test_decentral_cli.sh).
add_test(NAME test_decentral_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_decentral_cli.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR}
                 $<TARGET_FILE:node_relay>)
set_tests_properties(test_decentral_cli PROPERTIES LABELS "decentral;cli"
                     TIMEOUT 600)

# The canary's onlooker: a ZeroMQ relay that records the wire (a test
# program only).
add_executable(node_relay ${CMAKE_CURRENT_SOURCE_DIR}/node_relay.c)
target_link_libraries(node_relay PRIVATE ${ZMQ_LIB})
