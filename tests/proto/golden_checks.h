/*
 * golden_checks.h — what test_proto_golden.c runs: the fixtures with the
 * descriptor of our type and a function that asserts the decoded values, the
 * types that may appear inside Any, and messages built from scratch in C.
 */
#ifndef ATRIUM_TESTS_GOLDEN_CHECKS_H
#define ATRIUM_TESTS_GOLDEN_CHECKS_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

typedef struct golden_case {
    const char *fixture; /* file name in tests/proto/fixtures */
    const ProtobufCMessageDescriptor *descriptor;
    void (*check)(const ProtobufCMessage *message); /* asserts every field the fixture sets */
    bool has_unmodeled_fields;
} golden_case;

/* Every fixture; the last entry has fixture == NULL. */
extern const golden_case golden_cases[];

/* Our descriptors of the types that travel inside Any in the fixtures;
 * NULL-terminated. */
extern const ProtobufCMessageDescriptor *const golden_any_types[];

typedef struct golden_scratch {
    const char *fixture;              /* the fixture this message must equal */
    ProtobufCMessage *(*build)(void); /* builds it in C, from nothing */
    void (*release)(ProtobufCMessage *message);
} golden_scratch;

/* Messages built from scratch; the last entry has fixture == NULL. */
extern const golden_scratch golden_scratch_builders[];

#endif
