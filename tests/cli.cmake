# End-to-end checks of the command line: outputs, JSON, and one clear
# "enclaveml: error:" line with a non-zero exit for every kind of bad input.
add_test(NAME test_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR})
set_tests_properties(test_cli PROPERTIES LABELS "cli" TIMEOUT 600)
