/*
 * any.c — packing protobuf-c messages into google.protobuf.Any and back.
 */
#include "any.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Google__Protobuf__Any *any_pack_new(const ProtobufCMessage *message)
{
    Google__Protobuf__Any *any = malloc(sizeof(*any));
    if (any == NULL)
        return NULL;
    google__protobuf__any__init(any);
    size_t name_length = strlen(message->descriptor->name);
    size_t size = protobuf_c_message_get_packed_size(message);
    any->type_url = malloc(sizeof(ANY_TYPE_URL_PREFIX) + name_length);
    any->value.data = malloc(size ? size : 1);
    if (any->type_url == NULL || any->value.data == NULL) {
        any_free(any);
        return NULL;
    }
    memcpy(any->type_url, ANY_TYPE_URL_PREFIX, sizeof(ANY_TYPE_URL_PREFIX) - 1);
    memcpy(any->type_url + sizeof(ANY_TYPE_URL_PREFIX) - 1, message->descriptor->name,
           name_length + 1);
    any->value.len = protobuf_c_message_pack(message, any->value.data);
    return any;
}

void any_free(Google__Protobuf__Any *any)
{
    if (any == NULL)
        return;
    if (any->type_url != protobuf_c_empty_string)
        free(any->type_url);
    free(any->value.data);
    free(any);
}

const char *any_type_name(const Google__Protobuf__Any *any)
{
    const char *slash = any->type_url ? strrchr(any->type_url, '/') : NULL;
    return slash != NULL && slash[1] != '\0' ? slash + 1 : NULL;
}

ProtobufCMessage *any_unpack(const Google__Protobuf__Any *any,
                             const ProtobufCMessageDescriptor *descriptor, char *error,
                             size_t error_size)
{
    const char *name = any_type_name(any);
    if (name == NULL) {
        snprintf(error, error_size, "malformed type URL '%s'", any->type_url ? any->type_url : "");
        return NULL;
    }
    if (strcmp(name, descriptor->name) != 0) {
        snprintf(error, error_size, "expected %s, got %s", descriptor->name, name);
        return NULL;
    }
    ProtobufCMessage *message =
        protobuf_c_message_unpack(descriptor, NULL, any->value.len, any->value.data);
    if (message == NULL)
        snprintf(error, error_size, "%zu bytes do not decode as %s", any->value.len,
                 descriptor->name);
    return message;
}
