# Decentralized learning's trusted parts: topologies, partitions, sharing,
# Metropolis-Hastings averaging, the channel between enclaves.
eml_add_test(test_decentral LABELS "unit;decentral"
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decentral.c)
