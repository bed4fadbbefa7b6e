/*
 * any.h — google.protobuf.Any for protobuf-c messages: pack a message with its
 * type URL, and unpack an Any only into the type its URL names.
 *
 * Type URLs are "type.googleapis.com/<full message name>", as every xDS
 * implementation writes them; on unpack any prefix up to the last '/' is
 * accepted, as the protobuf specification allows.
 */
#ifndef ATRIUM_COMMON_ANY_H
#define ATRIUM_COMMON_ANY_H

#include "google/protobuf/any.pb-c.h"

#include <stddef.h>

#define ANY_TYPE_URL_PREFIX "type.googleapis.com/"

/* Packs message into a new Any. Returns NULL when out of memory. The caller
 * frees the result with any_free. */
Google__Protobuf__Any *any_pack_new(const ProtobufCMessage *message);

/* Frees an Any made by any_pack_new (NULL accepted). */
void any_free(Google__Protobuf__Any *any);

/* The full message name an Any's type URL names (points into any->type_url),
 * or NULL when the URL has no '/' or nothing after it. */
const char *any_type_name(const Google__Protobuf__Any *any);

/* Unpacks any as a message of descriptor's type. Returns the message (freed by
 * the caller with protobuf_c_message_free_unpacked(message, NULL)), or NULL
 * with the reason in error: a type URL naming another type, or bytes that do
 * not decode as that type. */
ProtobufCMessage *any_unpack(const Google__Protobuf__Any *any,
                             const ProtobufCMessageDescriptor *descriptor, char *error,
                             size_t error_size);

#endif
