# tests/adversarial/proxy.cmake — atrium-proxy's data path against clients and neighbours that
# misbehave (issue 12, defects 1, 5, 6, 10, 11 and the absolute-form part of 14): a second
# process on the same port, running out of file descriptors, half-sent heads, idle and stalled
# connections, uploads slower than the route timeout, aborted uploads, absolute-form targets.
# Real atriumd, atrium-proxy and Python backends on 127.0.0.1 (Debian's python3, standard
# library only; it reuses tests/integration/proxy_test.py).
add_test(NAME proxy_data_path COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/proxy_data_path.py
         $<TARGET_FILE:atriumd> $<TARGET_FILE:atrium-proxy> $<TARGET_FILE:atriumctl>)
set_tests_properties(proxy_data_path PROPERTIES TIMEOUT 300)
