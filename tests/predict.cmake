# Private prediction end to end (docs/evaluate.md, "Private prediction"):
# a provider's encrypted model run in a sim enclave on a user's encrypted
# images, the predictions encrypted to the user and equal to the
# plaintext `predict`'s; wrong grants, a recipient the user's grant does
# not name, a mismatched cfg and a spent --max-queries refused with one
# error line and no output; a canary image and the weights never on the
# host's side in the clear (test_predict_cli).
add_test(NAME test_predict_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_predict.sh
                 $<TARGET_FILE:enclaveml> ${PROJECT_SOURCE_DIR})
set_tests_properties(test_predict_cli PROPERTIES LABELS "enclave"
                     TIMEOUT 300)
