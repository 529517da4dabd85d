# .cfg network description parser (src/nn/cfg.c, src/nn/cfg_sections.c).
eml_add_test(test_cfg LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cfg.c)
