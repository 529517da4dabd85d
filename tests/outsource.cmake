# Outsourcing, the worker's side: a real `enclaveml worker` on a unix
# socket and on loopback TCP, driven by a test client over the host's link
# (worker_client.c) and through a fault-injecting proxy (worker_proxy.c, a
# test program only); refusals, timeouts, a killed worker, SIGTERM, and the
# command's errors (test_worker.sh).
foreach(prog worker_client worker_proxy)
  add_executable(${prog} ${CMAKE_CURRENT_SOURCE_DIR}/${prog}.c)
  target_include_directories(${prog} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${prog} PRIVATE eml_host)
endforeach()

add_test(NAME test_worker
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_worker.sh
                 $<TARGET_FILE:enclaveml> $<TARGET_FILE:worker_client>
                 $<TARGET_FILE:worker_proxy> ${PROJECT_SOURCE_DIR})
set_tests_properties(test_worker PROPERTIES LABELS "outsource;worker"
                     TIMEOUT 240)
