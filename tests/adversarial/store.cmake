# The store against damaged and full database files: zero bytes, corruption, disk full.
atrium_unit_test(adversarial_store_files ${CMAKE_CURRENT_LIST_DIR}/store_files.c)
# atriumd on a full disk (--max-database-mb): refusals, one log line per interval, the metric.
add_test(NAME adversarial_atriumd_disk_full
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/atriumd_disk_full.py $<TARGET_FILE:atriumd>)
set_tests_properties(adversarial_atriumd_disk_full PROPERTIES TIMEOUT 120)
