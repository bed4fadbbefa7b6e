/*
 * test_proto_golden.c — wire compatibility of proto/ with upstream xDS v3.
 *
 * For every fixture in tests/proto/fixtures (text format, written against the
 * UPSTREAM .proto files):
 *   1. `protoc --encode` with the upstream descriptors turns it into bytes;
 *   2. our generated code decodes those bytes; every nested message, including
 *      the ones inside google.protobuf.Any, must decode with no unknown fields
 *      (so every field the fixture sets is one we model, with the right number
 *      and wire type) — except the fixture that deliberately carries fields we
 *      do not model, where unknown fields must be present;
 *   3. the fixture's check function asserts the decoded values field by field;
 *   4. our code re-encodes the message, and `protoc --decode` with the upstream
 *      descriptors must print exactly what it prints for the upstream bytes
 *      (for the unmodeled fixture: the unknown fields survived).
 * Some messages are also built from scratch in C (below) and must decode
 * upstream to the same text as their fixture.
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "any.h"
#include "golden_checks.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char work_dir[] = "/tmp/atrium-golden-XXXXXX";

/* ---- files and protoc ---- */

/* Reads a whole file; the caller frees. Fails the test on error. */
static uint8_t *read_all(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        fail_msg("cannot open %s", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    uint8_t *data = malloc((size_t)size + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)size, file), (size_t)size);
    data[size] = '\0';
    fclose(file);
    *length = (size_t)size;
    return data;
}

static void write_all(const char *path, const uint8_t *data, size_t length)
{
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(data, 1, length, file), length);
    fclose(file);
}

/* Runs protoc --encode or --decode of type with the upstream descriptors,
 * from input to output. Paths are ours (no shell metacharacters). */
static void run_protoc(const char *mode, const char *type, const char *input, const char *output)
{
    char command[4096];
    snprintf(command, sizeof(command), "%s %s=%s --descriptor_set_in=%s < %s > %s", PROTOC_PATH,
             mode, type, UPSTREAM_DESCRIPTORS, input, output);
    int status = system(command);
    if (status != 0)
        fail_msg("protoc failed (%d): %s", status, command);
}

/* The type named by the fixture's first line "# proto-message: <type>". */
static void fixture_type(const char *fixture_path, char *type, size_t size)
{
    size_t length;
    char *text = (char *)read_all(fixture_path, &length);
    const char *marker = "# proto-message: ";
    if (strncmp(text, marker, strlen(marker)) != 0)
        fail_msg("%s must start with '%s<type>'", fixture_path, marker);
    const char *start = text + strlen(marker);
    size_t name_length = strcspn(start, " \r\n");
    assert_true(name_length < size);
    memcpy(type, start, name_length);
    type[name_length] = '\0';
    free(text);
}

/* ---- walking decoded messages ---- */

/* Message types that travel inside Any in the fixtures. */
static const ProtobufCMessageDescriptor *descriptor_for_any(const char *name)
{
    for (size_t i = 0; golden_any_types[i] != NULL; i++) {
        if (strcmp(golden_any_types[i]->name, name) == 0)
            return golden_any_types[i];
    }
    return NULL;
}

static size_t count_unknown_fields(const ProtobufCMessage *message, const char *path);

static size_t count_in_any(const ProtobufCMessage *message, const char *path)
{
    const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)message;
    const char *name = any_type_name(any);
    if (name == NULL)
        fail_msg("%s: Any without a type URL", path);
    const ProtobufCMessageDescriptor *descriptor = descriptor_for_any(name);
    if (descriptor == NULL)
        fail_msg("%s: Any holds %s, which the golden tests do not know", path, name);
    char error[256];
    ProtobufCMessage *inner = any_unpack(any, descriptor, error, sizeof(error));
    if (inner == NULL)
        fail_msg("%s: %s", path, error);
    char inner_path[512];
    snprintf(inner_path, sizeof(inner_path), "%s<%s>", path, name);
    size_t unknown = count_unknown_fields(inner, inner_path);
    protobuf_c_message_free_unpacked(inner, NULL);
    return unknown;
}

/* Counts unknown fields in message and everything nested in it, descending
 * into Any values; prints where they are. */
static size_t count_unknown_fields(const ProtobufCMessage *message, const char *path)
{
    size_t unknown = message->n_unknown_fields;
    for (size_t i = 0; i < message->n_unknown_fields; i++)
        print_message("unknown field %u in %s\n", message->unknown_fields[i].tag, path);
    if (message->descriptor == &google__protobuf__any__descriptor)
        return unknown + count_in_any(message, path);
    const ProtobufCMessageDescriptor *descriptor = message->descriptor;
    for (unsigned f = 0; f < descriptor->n_fields; f++) {
        const ProtobufCFieldDescriptor *field = &descriptor->fields[f];
        if (field->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)message;
        if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t chosen = *(const uint32_t *)(base + field->quantifier_offset);
            if (chosen != field->id)
                continue;
        }
        char child_path[512];
        snprintf(child_path, sizeof(child_path), "%s.%s", path, field->name);
        if (field->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t count = *(const size_t *)(base + field->quantifier_offset);
            ProtobufCMessage *const *items =
                *(ProtobufCMessage *const *const *)(base + field->offset);
            for (size_t i = 0; i < count; i++)
                unknown += count_unknown_fields(items[i], child_path);
        } else {
            const ProtobufCMessage *child =
                *(const ProtobufCMessage *const *)(base + field->offset);
            if (child != NULL)
                unknown += count_unknown_fields(child, child_path);
        }
    }
    return unknown;
}

/* ---- the round trip ---- */

/* Encodes the fixture upstream, decodes it with our code, checks it, and
 * compares our re-encoding with upstream's reading of the original bytes. */
static void run_golden_case(const golden_case *item)
{
    char fixture[1024], upstream_bytes[1024], upstream_text[1024], our_bytes[1024], our_text[1024],
        type[256];
    snprintf(fixture, sizeof(fixture), "%s/%s", FIXTURE_DIR, item->fixture);
    snprintf(upstream_bytes, sizeof(upstream_bytes), "%s/%s.upstream.bin", work_dir, item->fixture);
    snprintf(upstream_text, sizeof(upstream_text), "%s/%s.upstream.txt", work_dir, item->fixture);
    snprintf(our_bytes, sizeof(our_bytes), "%s/%s.ours.bin", work_dir, item->fixture);
    snprintf(our_text, sizeof(our_text), "%s/%s.ours.txt", work_dir, item->fixture);

    fixture_type(fixture, type, sizeof(type));
    assert_string_equal(type, item->descriptor->name);
    run_protoc("--encode", type, fixture, upstream_bytes);
    run_protoc("--decode", type, upstream_bytes, upstream_text);

    size_t length;
    uint8_t *bytes = read_all(upstream_bytes, &length);
    ProtobufCMessage *message = protobuf_c_message_unpack(item->descriptor, NULL, length, bytes);
    free(bytes);
    if (message == NULL)
        fail_msg("%s: our code cannot decode upstream's bytes", item->fixture);

    size_t unknown = count_unknown_fields(message, type);
    if (item->has_unmodeled_fields)
        assert_true(unknown > 0);
    else
        assert_int_equal(unknown, 0);
    item->check(message);

    size_t packed_size = protobuf_c_message_get_packed_size(message);
    uint8_t *packed = malloc(packed_size + 1);
    assert_non_null(packed);
    assert_int_equal(protobuf_c_message_pack(message, packed), packed_size);
    write_all(our_bytes, packed, packed_size);
    free(packed);
    protobuf_c_message_free_unpacked(message, NULL);

    run_protoc("--decode", type, our_bytes, our_text);
    size_t expected_length, actual_length;
    char *expected = (char *)read_all(upstream_text, &expected_length);
    char *actual = (char *)read_all(our_text, &actual_length);
    assert_string_equal(actual, expected);
    free(expected);
    free(actual);
}

static void test_golden_fixtures(void **state)
{
    (void)state;
    size_t count = 0;
    for (const golden_case *item = golden_cases; item->fixture != NULL; item++, count++) {
        print_message("fixture %s\n", item->fixture);
        run_golden_case(item);
    }
    assert_true(count >= 15);
}

/* ---- messages built from scratch ---- */

/* Packs message, decodes it upstream as type, and compares with the fixture's
 * upstream text. */
static void assert_encodes_like_fixture(const ProtobufCMessage *message, const char *fixture_name)
{
    char fixture[1024], upstream_bytes[1024], upstream_text[1024], our_bytes[1024], our_text[1024];
    snprintf(fixture, sizeof(fixture), "%s/%s", FIXTURE_DIR, fixture_name);
    snprintf(upstream_bytes, sizeof(upstream_bytes), "%s/scratch.upstream.bin", work_dir);
    snprintf(upstream_text, sizeof(upstream_text), "%s/scratch.upstream.txt", work_dir);
    snprintf(our_bytes, sizeof(our_bytes), "%s/scratch.ours.bin", work_dir);
    snprintf(our_text, sizeof(our_text), "%s/scratch.ours.txt", work_dir);
    const char *type = message->descriptor->name;
    run_protoc("--encode", type, fixture, upstream_bytes);
    run_protoc("--decode", type, upstream_bytes, upstream_text);

    size_t size = protobuf_c_message_get_packed_size(message);
    uint8_t *packed = malloc(size + 1);
    assert_non_null(packed);
    protobuf_c_message_pack(message, packed);
    write_all(our_bytes, packed, size);
    free(packed);
    run_protoc("--decode", type, our_bytes, our_text);

    size_t length;
    char *expected = (char *)read_all(upstream_text, &length);
    char *actual = (char *)read_all(our_text, &length);
    assert_string_equal(actual, expected);
    free(expected);
    free(actual);
}

static void test_scratch_messages(void **state)
{
    (void)state;
    for (const golden_scratch *item = golden_scratch_builders; item->fixture != NULL; item++) {
        print_message("from scratch: %s\n", item->fixture);
        ProtobufCMessage *message = item->build();
        assert_non_null(message);
        assert_encodes_like_fixture(message, item->fixture);
        item->release(message);
    }
}

/* ---- common/any ---- */

static void test_any_round_trip_and_errors(void **state)
{
    (void)state;
    Google__Protobuf__Duration duration = GOOGLE__PROTOBUF__DURATION__INIT;
    duration.seconds = 2;
    duration.nanos = 500000000;
    Google__Protobuf__Any *any = any_pack_new(&duration.base);
    assert_non_null(any);
    assert_string_equal(any->type_url, "type.googleapis.com/google.protobuf.Duration");
    assert_string_equal(any_type_name(any), "google.protobuf.Duration");

    char error[256];
    Google__Protobuf__Duration *back = (Google__Protobuf__Duration *)any_unpack(
        any, &google__protobuf__duration__descriptor, error, sizeof(error));
    assert_non_null(back);
    assert_int_equal(back->seconds, 2);
    assert_int_equal(back->nanos, 500000000);
    protobuf_c_message_free_unpacked(&back->base, NULL);

    /* The wrong type: a clear message, no decode attempted. */
    assert_null(any_unpack(any, &google__protobuf__uint32_value__descriptor, error, sizeof(error)));
    assert_string_equal(error,
                        "expected google.protobuf.UInt32Value, got google.protobuf.Duration");

    /* Malformed bytes for the right type: an error, never a crash. */
    static uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    Google__Protobuf__Any bad = GOOGLE__PROTOBUF__ANY__INIT;
    bad.type_url = "type.googleapis.com/google.protobuf.Duration";
    bad.value.data = garbage;
    bad.value.len = sizeof(garbage);
    assert_null(any_unpack(&bad, &google__protobuf__duration__descriptor, error, sizeof(error)));
    assert_non_null(strstr(error, "do not decode as google.protobuf.Duration"));

    /* A type URL without a name. */
    bad.type_url = "type.googleapis.com/";
    assert_null(any_unpack(&bad, &google__protobuf__duration__descriptor, error, sizeof(error)));
    assert_non_null(strstr(error, "malformed type URL"));
    bad.type_url = "";
    assert_null(any_unpack(&bad, &google__protobuf__duration__descriptor, error, sizeof(error)));

    /* Another prefix is accepted, as the protobuf specification allows. */
    free(any->type_url);
    any->type_url = strdup("example.com/types/google.protobuf.Duration");
    back = (Google__Protobuf__Duration *)any_unpack(any, &google__protobuf__duration__descriptor,
                                                    error, sizeof(error));
    assert_non_null(back);
    protobuf_c_message_free_unpacked(&back->base, NULL);
    any_free(any);
    any_free(NULL);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(work_dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char command[256];
    snprintf(command, sizeof(command), "rm -rf %s", work_dir);
    return system(command) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_round_trip_and_errors),
        cmocka_unit_test(test_golden_fixtures),
        cmocka_unit_test(test_scratch_messages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
