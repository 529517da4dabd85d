# The inference server's HTTP layer (src/serve): the request parser over
# split and pipelined streams, every refusal and its status, the response
# writer, routes, predict bodies (JSON and raw) and the metrics text.
eml_add_test(test_http LABELS unit TIMEOUT 120
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_http.c)
