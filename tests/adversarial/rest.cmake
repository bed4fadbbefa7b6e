# tests/adversarial/rest.cmake — the admin REST API's regression cases of issue 12: what a client
# can make atriumd's REST listener hold (header bytes, unread bodies, unauthenticated connections;
# defect 7) and running out of file descriptors (defect 5). Path parameters (defect 4), label and
# array limits (defect 9) and the refused empty split / prefix (defect 14) are cases of
# tests/test_rest_api.c and tests/test_model.c. Each case starts its own atriumd on 127.0.0.1.
foreach(rest_case rest_limits rest_fd_exhaustion)
  atrium_unit_test(${rest_case} ${CMAKE_CURRENT_LIST_DIR}/${rest_case}.c
                   ${CMAKE_CURRENT_LIST_DIR}/rest_raw.c
                   ${CMAKE_SOURCE_DIR}/tests/support/atriumd_fixture.c)
  target_include_directories(${rest_case} PRIVATE ${CMAKE_SOURCE_DIR}/tests/support
                                                  ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(${rest_case} PRIVATE PkgConfig::CURL)
  target_compile_definitions(${rest_case} PRIVATE ATRIUMD_PATH="$<TARGET_FILE:atriumd>")
  add_dependencies(${rest_case} atriumd)
  set_tests_properties(${rest_case} PROPERTIES TIMEOUT 120)
endforeach()
