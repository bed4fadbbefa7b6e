/*
 * state_file.c — atrium-proxy's saved xDS state on disk (see state_file.h):
 * one packed DeltaDiscoveryResponse per resource type behind a magic and a
 * format version, a CRC-32 at the end, written through a temporary file,
 * fsync and rename; a file that cannot be used is moved aside, never deleted.
 * Nothing here logs: every failure is returned with its reason.
 */
#include "state_file.h"

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "error_text.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC          "ATRXDSST"
#define MAGIC_LENGTH   8
#define FORMAT_VERSION 1
#define HEADER_LENGTH  (MAGIC_LENGTH + 4 + 4)
#define TRAILER_LENGTH 4
#define MAX_FILE_BYTES ((size_t)256 * 1024 * 1024)

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_response;
typedef Envoy__Service__Discovery__V3__Resource discovery_resource;

/* ---- integers and the checksum ---- */

static void put_uint32(uint8_t *at, uint32_t value)
{
    at[0] = (uint8_t)(value >> 24);
    at[1] = (uint8_t)(value >> 16);
    at[2] = (uint8_t)(value >> 8);
    at[3] = (uint8_t)value;
}

static uint32_t get_uint32(const uint8_t *at)
{
    return (uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | (uint32_t)at[3];
}

/* CRC-32 as zlib and Ethernet compute it (reflected polynomial 0xEDB88320). */
static uint32_t crc32_of(const uint8_t *data, size_t length)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < length; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

/* ---- encoding ---- */

/* Packs one type's record (length and message) at out, or measures it when
 * out is NULL. Returns its size, or 0 when out of memory. */
static size_t pack_record(proxy_resource_type type, const proxy_resource_set *resources,
                          const char *version, uint8_t *out)
{
    size_t count = resources->counts[type];
    discovery_resource *items = calloc(count ? count : 1, sizeof(*items));
    discovery_resource **pointers = calloc(count ? count : 1, sizeof(*pointers));
    Google__Protobuf__Any *anys = calloc(count ? count : 1, sizeof(*anys));
    size_t size = 0;
    if (items != NULL && pointers != NULL && anys != NULL) {
        delta_response response = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
        response.type_url = (char *)proxy_resource_type_url(type);
        response.system_version_info = (char *)version;
        response.n_resources = count;
        response.resources = pointers;
        for (size_t i = 0; i < count; i++) {
            const proxy_resource *resource = &resources->items[type][i];
            envoy__service__discovery__v3__resource__init(&items[i]);
            google__protobuf__any__init(&anys[i]);
            anys[i].type_url = response.type_url;
            anys[i].value.data = resource->bytes;
            anys[i].value.len = resource->length;
            items[i].name = resource->name;
            items[i].version = resource->version ? resource->version : "";
            items[i].resource = &anys[i];
            pointers[i] = &items[i];
        }
        size_t message_length = protobuf_c_message_get_packed_size(&response.base);
        if (message_length <= UINT32_MAX) {
            size = 4 + message_length;
            if (out != NULL) {
                put_uint32(out, (uint32_t)message_length);
                protobuf_c_message_pack(&response.base, out + 4);
            }
        }
    }
    free(items);
    free(pointers);
    free(anys);
    return size;
}

static bool record_wanted(const proxy_resource_set *resources, const state_file_versions *versions,
                          proxy_resource_type type)
{
    return resources->counts[type] > 0 || (versions != NULL && versions->text[type][0] != '\0');
}

int state_file_encode(const proxy_resource_set *resources, const state_file_versions *versions,
                      uint8_t **out, size_t *length, char *error, size_t error_size)
{
    size_t total = HEADER_LENGTH + TRAILER_LENGTH;
    uint32_t records = 0;
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        if (!record_wanted(resources, versions, (proxy_resource_type)type))
            continue;
        size_t size = pack_record((proxy_resource_type)type, resources,
                                  versions ? versions->text[type] : "", NULL);
        if (size == 0) {
            error_text(error, error_size,
                       "cannot encode the %s resources (too large or out of memory)",
                       proxy_resource_type_url((proxy_resource_type)type));
            return -1;
        }
        total += size;
        records++;
    }
    uint8_t *buffer = malloc(total);
    if (buffer == NULL) {
        error_text(error, error_size, "out of memory encoding %zu bytes of saved state", total);
        return -1;
    }
    memcpy(buffer, MAGIC, MAGIC_LENGTH);
    put_uint32(buffer + MAGIC_LENGTH, FORMAT_VERSION);
    put_uint32(buffer + MAGIC_LENGTH + 4, records);
    size_t used = HEADER_LENGTH;
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        if (!record_wanted(resources, versions, (proxy_resource_type)type))
            continue;
        size_t size = pack_record((proxy_resource_type)type, resources,
                                  versions ? versions->text[type] : "", buffer + used);
        if (size == 0 || used + size > total - TRAILER_LENGTH) {
            free(buffer);
            error_text(error, error_size, "cannot encode the %s resources (out of memory)",
                       proxy_resource_type_url((proxy_resource_type)type));
            return -1;
        }
        used += size;
    }
    put_uint32(buffer + used, crc32_of(buffer, used));
    *out = buffer;
    *length = used + TRAILER_LENGTH;
    return 0;
}

/* ---- decoding ---- */

static int compare_by_name(const void *left, const void *right)
{
    return strcmp(((const proxy_resource *)left)->name, ((const proxy_resource *)right)->name);
}

/* The last part of a type URL ("Cluster"), for messages. */
static const char *short_type(const char *url)
{
    const char *dot = strrchr(url, '.');
    return dot ? dot + 1 : url;
}

/* Copies one record's resources into out->items[type]. Returns 0, or -1 with
 * the reason (without the file's name) in error. */
static int take_record(const delta_response *response, proxy_resource_type type,
                       proxy_resource_set *out, char *error, size_t error_size)
{
    size_t count = response->n_resources;
    proxy_resource *items = calloc(count ? count : 1, sizeof(*items));
    if (items == NULL) {
        error_text(error, error_size, "out of memory");
        return -1;
    }
    out->items[type] = items;
    for (size_t i = 0; i < count; i++) {
        const discovery_resource *resource = response->resources[i];
        const char *name = resource->name;
        if (name == NULL || name[0] == '\0') {
            error_text(error, error_size, "a %s without a name", short_type(response->type_url));
            return -1;
        }
        const Google__Protobuf__Any *any = resource->resource;
        if (any == NULL || any->type_url == NULL ||
            strcmp(any->type_url, response->type_url) != 0) {
            error_text(error, error_size, "%s \"%s\" is not held as a %s",
                       short_type(response->type_url), name, response->type_url);
            return -1;
        }
        proxy_resource *item = &items[out->counts[type]];
        item->name = strdup(name);
        item->version = strdup(resource->version ? resource->version : "");
        item->bytes = malloc(any->value.len ? any->value.len : 1);
        item->length = any->value.len;
        out->counts[type]++; /* counted now: freed with the set on failure */
        if (item->name == NULL || item->version == NULL || item->bytes == NULL) {
            error_text(error, error_size, "out of memory");
            return -1;
        }
        if (any->value.len > 0)
            memcpy(item->bytes, any->value.data, any->value.len);
    }
    if (count > 1)
        qsort(items, count, sizeof(*items), compare_by_name);
    for (size_t i = 1; i < count; i++) {
        if (strcmp(items[i - 1].name, items[i].name) == 0) {
            error_text(error, error_size, "%s \"%s\" is held twice", short_type(response->type_url),
                       items[i].name);
            return -1;
        }
    }
    return 0;
}

/* Decodes into *out, which the caller clears on failure. */
static int decode_into(const uint8_t *data, size_t length, proxy_resource_set *out,
                       state_file_versions *versions, char *error, size_t error_size)
{
    if (length == 0) {
        error_text(error, error_size, "empty (0 bytes)");
        return -1;
    }
    if (length < MAGIC_LENGTH || memcmp(data, MAGIC, MAGIC_LENGTH) != 0) {
        error_text(error, error_size, "not an atrium-proxy state file (no \"%s\" magic)", MAGIC);
        return -1;
    }
    if (length < HEADER_LENGTH + TRAILER_LENGTH) {
        error_text(error, error_size, "truncated: %zu bytes, a state file has at least %d", length,
                   HEADER_LENGTH + TRAILER_LENGTH);
        return -1;
    }
    uint32_t format = get_uint32(data + MAGIC_LENGTH);
    if (format != FORMAT_VERSION) {
        error_text(error, error_size, "format version %u; this proxy reads version %d", format,
                   FORMAT_VERSION);
        return -1;
    }
    size_t body_end = length - TRAILER_LENGTH;
    uint32_t stored = get_uint32(data + body_end);
    uint32_t computed = crc32_of(data, body_end);
    if (stored != computed) {
        error_text(error, error_size, "corrupt: checksum %08x, the contents give %08x", stored,
                   computed);
        return -1;
    }
    uint32_t records = get_uint32(data + MAGIC_LENGTH + 4);
    size_t offset = HEADER_LENGTH;
    bool seen[PROXY_RESOURCE_TYPE_COUNT] = {false};
    for (uint32_t record = 0; record < records; record++) {
        if (body_end - offset < 4) {
            error_text(error, error_size, "corrupt: record %u of %u is missing", record + 1,
                       records);
            return -1;
        }
        uint32_t size = get_uint32(data + offset);
        offset += 4;
        if (size > body_end - offset) {
            error_text(error, error_size, "corrupt: record %u says %u bytes, %zu are left",
                       record + 1, size, body_end - offset);
            return -1;
        }
        delta_response *response = envoy__service__discovery__v3__delta_discovery_response__unpack(
            NULL, size, data + offset);
        offset += size;
        if (response == NULL) {
            error_text(error, error_size, "corrupt: record %u is not a DeltaDiscoveryResponse",
                       record + 1);
            return -1;
        }
        proxy_resource_type type;
        int result = 0;
        if (!proxy_resource_type_from_url(response->type_url, &type)) {
            error_text(error, error_size, "record %u holds resources of type \"%s\"", record + 1,
                       response->type_url);
            result = -1;
        } else if (seen[type]) {
            error_text(error, error_size, "record %u holds %s a second time", record + 1,
                       response->type_url);
            result = -1;
        } else {
            seen[type] = true;
            result = take_record(response, type, out, error, error_size);
            if (result == 0 && versions != NULL)
                snprintf(versions->text[type], sizeof(versions->text[type]), "%s",
                         response->system_version_info ? response->system_version_info : "");
        }
        envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
        if (result != 0)
            return -1;
    }
    if (offset != body_end) {
        error_text(error, error_size, "corrupt: %zu bytes after the last of %u records",
                   body_end - offset, records);
        return -1;
    }
    return 0;
}

int state_file_decode(const uint8_t *data, size_t length, proxy_resource_set *out,
                      state_file_versions *versions, char *error, size_t error_size)
{
    memset(out, 0, sizeof(*out));
    if (versions != NULL)
        memset(versions, 0, sizeof(*versions));
    if (decode_into(data, length, out, versions, error, error_size) != 0) {
        proxy_resource_set_clear(out);
        memset(out, 0, sizeof(*out));
        if (versions != NULL)
            memset(versions, 0, sizeof(*versions));
        return -1;
    }
    return 0;
}

/* ---- files ---- */

static int write_all(int fd, const uint8_t *data, size_t length)
{
    while (length > 0) {
        ssize_t written = write(fd, data, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return -1;
        data += written;
        length -= (size_t)written;
    }
    return 0;
}

/* fsync of the directory holding path, so that the rename is durable. */
static int sync_directory(const char *path)
{
    char directory[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(directory, sizeof(directory), ".");
    else if (slash == path)
        snprintf(directory, sizeof(directory), "/");
    else
        snprintf(directory, sizeof(directory), "%.*s", (int)(slash - path), path);
    int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int result = fsync(fd);
    close(fd);
    return result;
}

int state_file_write(const char *path, const proxy_resource_set *resources,
                     const state_file_versions *versions, char *error, size_t error_size)
{
    uint8_t *data = NULL;
    size_t length = 0;
    if (state_file_encode(resources, versions, &data, &length, error, error_size) != 0)
        return -1;
    char temporary[4096];
    if ((size_t)snprintf(temporary, sizeof(temporary), "%s.tmp", path) >= sizeof(temporary)) {
        free(data);
        error_text(error, error_size, "%s: path too long", path);
        return -1;
    }
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        error_text(error, error_size, "cannot create %s: %s", temporary, strerror(errno));
        free(data);
        return -1;
    }
    const char *step = NULL;
    if (fchmod(fd, 0600) != 0) /* when an older temporary file had another mode */
        step = "chmod";
    else if (write_all(fd, data, length) != 0)
        step = "write";
    else if (fsync(fd) != 0)
        step = "fsync";
    int saved_errno = errno;
    free(data);
    if (close(fd) != 0 && step == NULL) {
        step = "close";
        saved_errno = errno;
    }
    if (step == NULL && rename(temporary, path) != 0) {
        step = "rename";
        saved_errno = errno;
    }
    if (step != NULL) {
        unlink(temporary);
        error_text(error, error_size, "cannot save %s (%s): %s", path, step, strerror(saved_errno));
        return -1;
    }
    if (sync_directory(path) != 0) {
        error_text(error, error_size, "saved %s, but the fsync of its directory failed: %s", path,
                   strerror(errno));
        return -1;
    }
    return 0;
}

int state_file_read(const char *path, proxy_resource_set *out, state_file_versions *versions,
                    char *error, size_t error_size)
{
    memset(out, 0, sizeof(*out));
    if (versions != NULL)
        memset(versions, 0, sizeof(*versions));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return STATE_FILE_MISSING;
    if (fd < 0) {
        error_text(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return STATE_FILE_UNREADABLE;
    }
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
        error_text(error, error_size, "%s: not a regular file", path);
        close(fd);
        return STATE_FILE_UNREADABLE;
    }
    if ((unsigned long long)info.st_size > MAX_FILE_BYTES) {
        error_text(error, error_size,
                   "saved state %s refused: corrupt: %lld bytes, a state file has at most %zu",
                   path, (long long)info.st_size, MAX_FILE_BYTES);
        close(fd);
        return STATE_FILE_CORRUPT;
    }
    size_t length = (size_t)info.st_size;
    uint8_t *data = malloc(length ? length : 1);
    size_t got = 0;
    int read_errno = 0;
    while (data != NULL && got < length) {
        ssize_t count = read(fd, data + got, length - got);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            read_errno = errno;
        if (count <= 0)
            break;
        got += (size_t)count;
    }
    close(fd);
    if (data == NULL || got != length) {
        error_text(error, error_size, "cannot read %s: %s", path,
                   data == NULL      ? "out of memory"
                   : read_errno != 0 ? strerror(read_errno)
                                     : "it ended early");
        free(data);
        return STATE_FILE_UNREADABLE;
    }
    char reason[400];
    int result = state_file_decode(data, length, out, versions, reason, sizeof(reason));
    free(data);
    if (result != 0) {
        error_text(error, error_size, "saved state %s refused: %s", path, reason);
        return STATE_FILE_CORRUPT;
    }
    return STATE_FILE_READ;
}

int state_file_set_aside(const char *path, long long unix_time, char *moved_to,
                         size_t moved_to_size, char *error, size_t error_size)
{
    char target[4096];
    for (unsigned attempt = 1; attempt <= 100; attempt++) {
        int length =
            attempt == 1
                ? snprintf(target, sizeof(target), "%s.corrupt-%lld", path, unix_time)
                : snprintf(target, sizeof(target), "%s.corrupt-%lld.%u", path, unix_time, attempt);
        if (length < 0 || (size_t)length >= sizeof(target)) {
            error_text(error, error_size, "cannot move %s aside: path too long", path);
            return -1;
        }
        /* link + unlink rather than rename: a link never replaces a file
         * already there (two corrupt files within one second keep both). */
        if (link(path, target) != 0) {
            if (errno == EEXIST)
                continue;
            error_text(error, error_size, "cannot move %s aside to %s: %s", path, target,
                       strerror(errno));
            return -1;
        }
        if (unlink(path) != 0) {
            int saved_errno = errno;
            unlink(target);
            error_text(error, error_size, "cannot move %s aside (unlink): %s", path,
                       strerror(saved_errno));
            return -1;
        }
        /* Best effort: the file is moved either way; should a crash undo the
         * move, the next start finds the same file and moves it aside again. */
        (void)sync_directory(path);
        if (moved_to != NULL)
            snprintf(moved_to, moved_to_size, "%s", target);
        return 0;
    }
    error_text(error, error_size,
               "cannot move %s aside: %s.corrupt-%lld and 99 more names are taken", path, path,
               unix_time);
    return -1;
}
