/*
 * tsan_handoff.h — tells ThreadSanitizer about hand-offs it cannot see.
 *
 * gRPC's completion queues pass a tag (and the memory behind it) from the
 * thread that started an operation to the thread that takes its completion.
 * Debian's gRPC is not built with ThreadSanitizer, so the synchronisation
 * inside it is invisible and every such hand-off looks like a data race.
 * HANDOFF_RELEASE(tag) before the tag is given to gRPC and
 * HANDOFF_ACQUIRE(tag) after a completion queue returned it state exactly the
 * ordering gRPC guarantees. Outside a ThreadSanitizer build both are nothing.
 */
#ifndef ATRIUM_COMMON_TSAN_HANDOFF_H
#define ATRIUM_COMMON_TSAN_HANDOFF_H

#if defined(__SANITIZE_THREAD__)
#define ATRIUM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ATRIUM_TSAN 1
#endif
#endif

#ifdef ATRIUM_TSAN
#include <sanitizer/tsan_interface.h>
#define HANDOFF_RELEASE(tag) __tsan_release((void *)(tag))
#define HANDOFF_ACQUIRE(tag) __tsan_acquire((void *)(tag))
#else
#define HANDOFF_RELEASE(tag) ((void)(tag))
#define HANDOFF_ACQUIRE(tag) ((void)(tag))
#endif

#endif
