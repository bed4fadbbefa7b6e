/*
 * state_file.h — atrium-proxy's saved xDS state: every resource the proxy
 * last accepted, on disk, so that a restarted proxy serves its last good
 * configuration before atriumd answers (static stability).
 *
 * Format, version 1 (every integer is a big-endian uint32):
 *   "ATRXDSST"                  magic, 8 bytes
 *   format version              1
 *   record count                one record per resource type held
 *   record count times:
 *     length                    of the bytes that follow
 *     DeltaDiscoveryResponse    packed envoy.service.discovery.v3 message for one
 *                               type: type_url, system_version_info (the version
 *                               last ACKed) and every resource as
 *                               Resource{name, version, Any}
 *   CRC-32 (IEEE 802.3)         of every byte before it
 * Nothing may follow the checksum. A file that breaks any of this, or holds a
 * type twice, a resource twice, a resource without a name or whose Any is not
 * of its record's type, is refused as a whole with the reason.
 *
 * Writing is atomic: a temporary file next to it (mode 0600), fsync, rename,
 * fsync of the directory. A reader sees the old file or the new one.
 *
 * A file that cannot be used is kept as evidence, not deleted:
 * state_file_set_aside moves it to <path>.corrupt-<unix time>, so the next
 * save starts a fresh file and nobody loses what went wrong.
 *
 * Ownership: callers own every buffer and set they pass; a set filled by a
 * read is the caller's to free with proxy_resource_set_clear.
 */
#ifndef ATRIUM_PROXY_STATE_FILE_H
#define ATRIUM_PROXY_STATE_FILE_H

#include "proxy_config.h"

#include <stddef.h>
#include <stdint.h>

#define STATE_FILE_NAME         "xds-state.pb"
#define STATE_FILE_VERSION_SIZE 64 /* bytes of a system_version_info kept per type */

/* The system_version_info of each type, "" when none. */
typedef struct state_file_versions {
    char text[PROXY_RESOURCE_TYPE_COUNT][STATE_FILE_VERSION_SIZE];
} state_file_versions;

/* Encodes resources and versions (NULL: none) in the format above. Returns 0
 * with a malloc'd buffer in *out (the caller frees it) and its length, or -1
 * with the reason in error. */
int state_file_encode(const proxy_resource_set *resources, const state_file_versions *versions,
                      uint8_t **out, size_t *length, char *error, size_t error_size);

/* Decodes a whole file's bytes into *out (which must be empty: zeroed) and
 * versions (NULL: not wanted). Each type's resources come sorted by name.
 * Returns 0, or -1 with the reason in error and *out left empty. */
int state_file_decode(const uint8_t *data, size_t length, proxy_resource_set *out,
                      state_file_versions *versions, char *error, size_t error_size);

/* Writes resources and versions to path atomically (see above). Returns 0, or
 * -1 with the reason in error (the previous file, if any, is left as it was). */
int state_file_write(const char *path, const proxy_resource_set *resources,
                     const state_file_versions *versions, char *error, size_t error_size);

#define STATE_FILE_READ       1    /* state_file_read: read and decoded */
#define STATE_FILE_MISSING    0    /* there is no file: nothing to read, not an error */
#define STATE_FILE_UNREADABLE (-1) /* cannot be opened or read (permissions, I/O, not a file) */
#define STATE_FILE_CORRUPT    (-2) /* read, but its bytes are refused (see the format) */

/* Reads path into *out (empty on entry) and versions (NULL: not wanted).
 * Returns STATE_FILE_READ, STATE_FILE_MISSING, or STATE_FILE_UNREADABLE or
 * STATE_FILE_CORRUPT with the reason in error, naming path; *out is empty
 * unless STATE_FILE_READ. A file larger than any state file may be counts as
 * corrupt. */
int state_file_read(const char *path, proxy_resource_set *out, state_file_versions *versions,
                    char *error, size_t error_size);

/* Moves the file at path aside, to "<path>.corrupt-<unix_time>" (or, when
 * that name is taken, "<path>.corrupt-<unix_time>.2", ".3", ...: an existing
 * file is never replaced), then fsyncs the directory (best effort). Returns 0 with the new
 * name in moved_to (the caller's buffer; NULL: not wanted), or -1 with the
 * reason in error, the file left where it was. */
int state_file_set_aside(const char *path, long long unix_time, char *moved_to,
                         size_t moved_to_size, char *error, size_t error_size);

#endif
