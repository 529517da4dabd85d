# IDX, gzip and safetensors parsers and writers (src/formats).
eml_add_test(test_formats LABELS unit TIMEOUT 120
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_formats.c)
