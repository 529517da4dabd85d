# Verifiable evaluation end to end (docs/evaluate.md): a model owner's
# encrypted model and two data owners' encrypted test sets, granted to a
# sim enclave; the signed report checked against `eval`, verified, refused
# when tampered with; wrong grants, a mismatched cfg and a missing test set
# refused with one error line and no report; a canary test image never on
# the host's side in the clear; the grants' limits (max-evaluations across
# enclave restarts and a ledger rollback, min-examples) and the model's
# release to an organiser's key (test_evaluate_cli).
add_test(NAME test_evaluate_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_evaluate.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR})
set_tests_properties(test_evaluate_cli PROPERTIES LABELS "enclave"
                     TIMEOUT 300)
