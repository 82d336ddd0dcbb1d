// The C side of the SFBufSQLite extension: the entry points SQLite calls, and the functions
// the Swift side (SFBufSQLite) defines for the C glue to call.
#ifndef CSFBUFSQLITE_H
#define CSFBUFSQLITE_H

#include <stdint.h>

struct sqlite3;
struct sqlite3_api_routines;

// The extension's entry point, named after the library file (libSFBufSQLite.so):
// registers the `sfbuf` VFS, the SQL function sfbuf_stats() on `db`, and itself as an
// automatic extension so that every later connection gets sfbuf_stats() and refuses a
// malformed configuration. Returns SQLITE_OK_LOAD_PERMANENTLY: the VFS outlives `db`.
int sqlite3_sfbufsqlite_init(struct sqlite3 *db, char **pzErrMsg,
                             const struct sqlite3_api_routines *pApi);

// The same, for a program that links the extension statically: register it with
// sqlite3_auto_extension(); it returns SQLITE_OK and fails a connection whose main
// database was opened with vfs=sfbuf and a bad URI parameter.
int sfbufsqlite_connection_init(struct sqlite3 *db, char **pzErrMsg,
                                const struct sqlite3_api_routines *pApi);

// Defined in Swift (SFBufSQLite/Exports.swift). `state` is a retained per-file object.
// Opens the per-file state of a main database, or returns NULL and a malloc'd message.
void *sfbufsqlite_file_open(const char *path, const char *nsfbufs, const char *direct,
                            const char *policy, const char *admit, char **error);
// xFetch: a pointer to `amount` bytes at `offset`, or NULL (SQLite then uses xRead).
void *sfbufsqlite_file_fetch(void *state, int64_t offset, int amount);
// xUnfetch with a pointer, or with NULL (drop everything mapped for this file).
void sfbufsqlite_file_unfetch(void *state, int64_t offset, void *pointer);
// Before xTruncate(size): nothing at or past `size` may be handed out again.
void sfbufsqlite_file_will_truncate(void *state, int64_t size);
// After a successful xWrite ending at `end`: the file has at least `end` bytes.
void sfbufsqlite_file_wrote(void *state, int64_t end);
// SQLITE_FCNTL_MMAP_SIZE: sets the limit when `limit` >= 0; returns the previous one.
int64_t sfbufsqlite_file_mmap_limit(void *state, int64_t limit);
// xClose: frees what is still mapped, drops the wires and the state.
void sfbufsqlite_file_close(void *state);
// sfbuf_stats(): a malloc'd text.
char *sfbufsqlite_file_stats(void *state);

#endif
