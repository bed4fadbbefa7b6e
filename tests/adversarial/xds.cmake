# tests/adversarial/xds.cmake — the xDS server's regression cases of issue 12: a second atriumd on
# the same xDS ports (defect 1, xds_ports) and a subscriber that never reads (defect 8,
# xds_slow_consumer). Revocation over mTLS (defect 2) is a case of tests/test_xds_mtls.c; node ids,
# NACK text, undecodable requests and unknown methods (defects 3 and 13) are cases of
# tests/test_xds_protocol.c, and proxy pruning of tests/test_store.c. Each case starts its own
# atriumd on 127.0.0.1.
foreach(xds_case xds_ports xds_slow_consumer)
  atrium_unit_test(${xds_case} ${CMAKE_CURRENT_LIST_DIR}/${xds_case}.c
                   ${CMAKE_SOURCE_DIR}/tests/support/atriumd_fixture.c)
  target_include_directories(${xds_case} PRIVATE ${CMAKE_SOURCE_DIR}/tests/support)
  target_link_libraries(${xds_case} PRIVATE PkgConfig::GRPC PkgConfig::CURL)
  target_compile_definitions(${xds_case} PRIVATE ATRIUMD_PATH="$<TARGET_FILE:atriumd>")
  add_dependencies(${xds_case} atriumd)
  set_tests_properties(${xds_case} PROPERTIES TIMEOUT 180)
endforeach()
