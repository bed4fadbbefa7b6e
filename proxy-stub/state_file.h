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

/* Reads path into *out (empty on entry) and versions (NULL: not wanted).
 * Returns 1 when read, 0 when there is no file (nothing to read, not an
 * error), -1 with the reason, naming path, when it cannot be read or is
 * corrupt. */
int state_file_read(const char *path, proxy_resource_set *out, state_file_versions *versions,
                    char *error, size_t error_size);

#endif
