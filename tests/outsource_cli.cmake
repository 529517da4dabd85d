# --outsource end to end: real worker processes on a unix socket and on
# loopback TCP, training, eval and predict through them, a fault-injecting
# proxy (tests/worker_proxy.c), a worker that dies, bad options.  Slow
# under the sanitizers (the worker's exact arithmetic), so labelled slow.
add_test(NAME test_outsource_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_outsource_cli.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR}
                 ${PROJECT_BINARY_DIR})
set_tests_properties(test_outsource_cli PROPERTIES LABELS "outsource;slow"
                     TIMEOUT 900)
