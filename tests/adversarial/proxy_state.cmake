# atrium-proxy's saved state (issue 12, defect 12): a damaged <state-dir>/xds-state.pb is moved
# aside and the proxy starts from atriumd; real atriumd and atrium-proxy processes on 127.0.0.1.
atrium_unit_test(proxy_state ${CMAKE_CURRENT_LIST_DIR}/proxy_state.c
                 ${CMAKE_SOURCE_DIR}/tests/support/atriumd_fixture.c)
target_include_directories(proxy_state PRIVATE ${CMAKE_SOURCE_DIR}/tests/support)
target_link_libraries(proxy_state PRIVATE atrium_proxy PkgConfig::CURL)
target_compile_definitions(proxy_state PRIVATE ATRIUMD_PATH="$<TARGET_FILE:atriumd>"
                                               PROXY_PATH="$<TARGET_FILE:atrium-proxy>")
add_dependencies(proxy_state atriumd atrium-proxy)
set_tests_properties(proxy_state PROPERTIES TIMEOUT 300)
