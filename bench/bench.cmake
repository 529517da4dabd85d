add_executable(bench_train ${CMAKE_CURRENT_SOURCE_DIR}/bench_train.c)
target_include_directories(bench_train PRIVATE ${PROJECT_SOURCE_DIR}/src ${DNNL_INCLUDE})
target_link_libraries(bench_train PRIVATE eml_host)
