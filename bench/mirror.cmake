# bench_mirror: the sealed mirror (pool in /dev/shm, pool on disk) against
# the disk checkpoint; its default directory is the build dir.
add_executable(bench_mirror ${CMAKE_CURRENT_SOURCE_DIR}/bench_mirror.c)
target_include_directories(bench_mirror PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_definitions(bench_mirror PRIVATE
                           EML_BENCH_BUILD_DIR="${CMAKE_BINARY_DIR}")
target_link_libraries(bench_mirror PRIVATE eml_host)
