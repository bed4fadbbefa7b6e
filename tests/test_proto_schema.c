/*
 * test_proto_schema.c — every message, field and enum value in proto/ exists
 * upstream with the same full name, number, type, label, message/enum type
 * and oneof. Both schemas are read as compiled descriptor sets: ours from
 * proto/, upstream's from the .proto files of the npm package
 * @grpc/grpc-js-xds (see tests/proto/upstream_descriptors.sh).
 *
 * The golden tests prove the fixtures round-trip; this proves that nothing we
 * declare, including fields no fixture sets, differs from upstream.
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "google/protobuf/descriptor.pb-c.h"

#include <stdbool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Google__Protobuf__DescriptorProto message_proto;
typedef Google__Protobuf__EnumDescriptorProto enum_proto;
typedef Google__Protobuf__FieldDescriptorProto field_proto;

/* A message or enum with its full name ("envoy.config.core.v3.Node",
 * "envoy.config.cluster.v3.Cluster.LbPolicy"). */
typedef struct named_type {
    char *full_name;
    const message_proto *message; /* one of these two is set */
    const enum_proto *enumeration;
} named_type;

typedef struct type_index {
    named_type *items;
    size_t count;
} type_index;

static void index_add(type_index *index, const char *scope, const char *name,
                      const message_proto *message, const enum_proto *enumeration)
{
    index->items = realloc(index->items, (index->count + 1) * sizeof(named_type));
    assert_non_null(index->items);
    named_type *item = &index->items[index->count++];
    size_t length = strlen(scope) + strlen(name) + 2;
    item->full_name = malloc(length);
    assert_non_null(item->full_name);
    snprintf(item->full_name, length, "%s%s%s", scope, scope[0] ? "." : "", name);
    item->message = message;
    item->enumeration = enumeration;
}

static void index_message(type_index *index, const char *scope, const message_proto *message)
{
    index_add(index, scope, message->name, message, NULL);
    char *full_name = strdup(index->items[index->count - 1].full_name);
    for (size_t i = 0; i < message->n_nested_type; i++)
        index_message(index, full_name, message->nested_type[i]);
    for (size_t i = 0; i < message->n_enum_type; i++)
        index_add(index, full_name, message->enum_type[i]->name, NULL, message->enum_type[i]);
    free(full_name);
}

static Google__Protobuf__FileDescriptorSet *load_set(const char *path, type_index *index)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        fail_msg("cannot open %s", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    uint8_t *data = malloc((size_t)size);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)size, file), (size_t)size);
    fclose(file);
    Google__Protobuf__FileDescriptorSet *set =
        google__protobuf__file_descriptor_set__unpack(NULL, (size_t)size, data);
    free(data);
    assert_non_null(set);
    for (size_t f = 0; f < set->n_file; f++) {
        const Google__Protobuf__FileDescriptorProto *proto = set->file[f];
        const char *package = proto->package ? proto->package : "";
        for (size_t i = 0; i < proto->n_message_type; i++)
            index_message(index, package, proto->message_type[i]);
        for (size_t i = 0; i < proto->n_enum_type; i++)
            index_add(index, package, proto->enum_type[i]->name, NULL, proto->enum_type[i]);
    }
    return set;
}

static const named_type *find(const type_index *index, const char *full_name)
{
    for (size_t i = 0; i < index->count; i++) {
        if (strcmp(index->items[i].full_name, full_name) == 0)
            return &index->items[i];
    }
    return NULL;
}

static void index_free(type_index *index)
{
    for (size_t i = 0; i < index->count; i++)
        free(index->items[i].full_name);
    free(index->items);
}

static const char *oneof_name(const message_proto *message, const field_proto *field)
{
    if (!field->has_oneof_index || field->oneof_index < 0 ||
        (size_t)field->oneof_index >= message->n_oneof_decl)
        return "";
    return message->oneof_decl[field->oneof_index]->name;
}

static const char *text_or_empty(const char *text)
{
    return text ? text : "";
}

/* Compares one of our messages with upstream's; returns the differences found. */
static int compare_message(const char *full_name, const message_proto *ours,
                           const message_proto *theirs)
{
    int differences = 0;
    for (size_t i = 0; i < ours->n_field; i++) {
        const field_proto *field = ours->field[i];
        const field_proto *match = NULL;
        for (size_t j = 0; j < theirs->n_field && match == NULL; j++) {
            if (theirs->field[j]->number == field->number)
                match = theirs->field[j];
        }
        if (match == NULL) {
            print_error("%s.%s: number %d does not exist upstream\n", full_name, field->name,
                        field->number);
            differences++;
            continue;
        }
        if (strcmp(field->name, match->name) != 0 || field->type != match->type ||
            field->label != match->label ||
            strcmp(text_or_empty(field->type_name), text_or_empty(match->type_name)) != 0 ||
            strcmp(oneof_name(ours, field), oneof_name(theirs, match)) != 0) {
            print_error("%s field %d: ours %s type %d label %d %s oneof '%s'; upstream %s type %d "
                        "label %d %s oneof '%s'\n",
                        full_name, field->number, field->name, field->type, field->label,
                        text_or_empty(field->type_name), oneof_name(ours, field), match->name,
                        match->type, match->label, text_or_empty(match->type_name),
                        oneof_name(theirs, match));
            differences++;
        }
    }
    return differences;
}

static int compare_enum(const char *full_name, const enum_proto *ours, const enum_proto *theirs)
{
    int differences = 0;
    for (size_t i = 0; i < ours->n_value; i++) {
        bool found = false;
        for (size_t j = 0; j < theirs->n_value && !found; j++) {
            found = strcmp(ours->value[i]->name, theirs->value[j]->name) == 0 &&
                    ours->value[i]->number == theirs->value[j]->number;
        }
        if (!found) {
            print_error("%s.%s = %d does not exist upstream\n", full_name, ours->value[i]->name,
                        ours->value[i]->number);
            differences++;
        }
    }
    /* A value upstream has and we lack would arrive as a number we cannot name. */
    if (ours->n_value != theirs->n_value) {
        print_error("%s: %zu values, upstream has %zu\n", full_name, ours->n_value,
                    theirs->n_value);
        differences++;
    }
    return differences;
}

static void test_every_declaration_matches_upstream(void **state)
{
    (void)state;
    type_index ours = {0}, theirs = {0};
    Google__Protobuf__FileDescriptorSet *our_set = load_set(ATRIUM_DESCRIPTORS, &ours);
    Google__Protobuf__FileDescriptorSet *their_set = load_set(UPSTREAM_DESCRIPTORS, &theirs);
    int differences = 0;
    size_t messages = 0, fields = 0;
    for (size_t i = 0; i < ours.count; i++) {
        const named_type *item = &ours.items[i];
        if (strncmp(item->full_name, "atrium.", 7) == 0)
            continue; /* Atrium's own API (the CA service) has no upstream */
        const named_type *match = find(&theirs, item->full_name);
        if (match == NULL || (item->message != NULL) != (match->message != NULL)) {
            print_error("%s: no such %s upstream\n", item->full_name,
                        item->message ? "message" : "enum");
            differences++;
        } else if (item->message != NULL) {
            differences += compare_message(item->full_name, item->message, match->message);
            messages++;
            fields += item->message->n_field;
        } else {
            differences += compare_enum(item->full_name, item->enumeration, match->enumeration);
        }
    }
    print_message("compared %zu messages and %zu fields with upstream\n", messages, fields);
    assert_true(messages > 50);
    assert_int_equal(differences, 0);
    google__protobuf__file_descriptor_set__free_unpacked(our_set, NULL);
    google__protobuf__file_descriptor_set__free_unpacked(their_set, NULL);
    index_free(&ours);
    index_free(&theirs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_declaration_matches_upstream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
