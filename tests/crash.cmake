# Crash injection for the training-state mirror: SIGKILL at random moments,
# resume, byte-identical weights.  30 trials here (release build only: the
# label "slow" keeps it out of the sanitizer run); `make crashtest` runs 300.
add_test(NAME test_crash
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_crash.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR} 30)
set_tests_properties(test_crash PROPERTIES LABELS "mirror;slow" TIMEOUT 900)
