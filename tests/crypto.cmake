# Crypto primitives (known answers, negative tests), the encrypted container
# and key files (src/crypto, src/host/keyfile.c).
eml_add_test(test_crypto LABELS unit kat
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_crypto.c)
