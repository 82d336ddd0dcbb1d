// The `sfbuf` VFS: a shim over the default `unix` VFS. Every method delegates to it except
// xFetch and xUnfetch, which the Swift side answers with sf_buf mappings, and the few
// around them that keep its idea of the file right (xWrite, xTruncate, xFileControl with
// SQLITE_FCNTL_MMAP_SIZE, xLock of a refused file, xClose).

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "CSFBufSQLite.h"

typedef struct SFBufFile {
  sqlite3_file base;  // pMethods = &sfbufIoMethods
  sqlite3_file *real; // the unix VFS's file, just after this struct
  void *state;        // the Swift per-file state (main databases only)
  char *refusal;      // why the URI parameters were refused (malloc'd), or NULL
} SFBufFile;

#define REAL(f) (((SFBufFile *)(f))->real)
#define ROUND8(n) (((n) + 7) & ~7)

static sqlite3_vfs *rootVfs;
static sqlite3_vfs sfbufVfs;
static const sqlite3_io_methods sfbufIoMethods;

// MARK: io_methods: delegation

static int xClose(sqlite3_file *f) {
  SFBufFile *p = (SFBufFile *)f;
  if (p->state) {
    sfbufsqlite_file_close(p->state);
    p->state = 0;
  }
  free(p->refusal);
  p->refusal = 0;
  int rc = SQLITE_OK;
  if (p->real->pMethods) rc = p->real->pMethods->xClose(p->real);
  return rc;
}

static int xRead(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off) {
  return REAL(f)->pMethods->xRead(REAL(f), buf, amt, off);
}

static int xWrite(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off) {
  SFBufFile *p = (SFBufFile *)f;
  int rc = p->real->pMethods->xWrite(p->real, buf, amt, off);
  if (rc == SQLITE_OK && p->state) sfbufsqlite_file_wrote(p->state, off + amt);
  return rc;
}

static int xTruncate(sqlite3_file *f, sqlite3_int64 size) {
  SFBufFile *p = (SFBufFile *)f;
  // First shrink what may be mapped, then the file: no mapping ever shows missing bytes.
  if (p->state) sfbufsqlite_file_will_truncate(p->state, size);
  return p->real->pMethods->xTruncate(p->real, size);
}

static int xSync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }

static int xFileSize(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int xLock(sqlite3_file *f, int lock) {
  SFBufFile *p = (SFBufFile *)f;
  if (p->refusal) {
    sqlite3_log(SQLITE_CANTOPEN, "%s", p->refusal);
    return SQLITE_CANTOPEN;
  }
  return p->real->pMethods->xLock(p->real, lock);
}

static int xUnlock(sqlite3_file *f, int lock) { return REAL(f)->pMethods->xUnlock(REAL(f), lock); }

static int xCheckReservedLock(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int xFileControl(sqlite3_file *f, int op, void *arg) {
  SFBufFile *p = (SFBufFile *)f;
  if (op == SQLITE_FCNTL_MMAP_SIZE && p->state) {
    // Ours alone: the unix file keeps a limit of 0 and never maps anything itself.
    sqlite3_int64 *limit = (sqlite3_int64 *)arg;
    *limit = sfbufsqlite_file_mmap_limit(p->state, *limit);
    return SQLITE_OK;
  }
  if (op == SQLITE_FCNTL_VFSNAME) {
    int rc = p->real->pMethods->xFileControl(p->real, op, arg);
    if (rc == SQLITE_OK && *(char **)arg) {
      char *inner = *(char **)arg;
      *(char **)arg = sqlite3_mprintf("sfbuf/%z", inner);
    } else {
      *(char **)arg = sqlite3_mprintf("sfbuf");
    }
    return SQLITE_OK;
  }
  return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int xSectorSize(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }

static int xDeviceCharacteristics(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int xShmMap(sqlite3_file *f, int region, int size, int extend, void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, pp);
}

static int xShmLock(sqlite3_file *f, int offset, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void xShmBarrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }

static int xShmUnmap(sqlite3_file *f, int deleteFlag) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), deleteFlag);
}

// MARK: io_methods: the mappings

static int xFetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp) {
  SFBufFile *p = (SFBufFile *)f;
  *pp = p->state ? sfbufsqlite_file_fetch(p->state, off, amt) : 0;
  return SQLITE_OK;
}

static int xUnfetch(sqlite3_file *f, sqlite3_int64 off, void *ptr) {
  SFBufFile *p = (SFBufFile *)f;
  if (p->state) sfbufsqlite_file_unfetch(p->state, off, ptr);
  return SQLITE_OK;
}

static const sqlite3_io_methods sfbufIoMethods = {
    3,
    xClose,
    xRead,
    xWrite,
    xTruncate,
    xSync,
    xFileSize,
    xLock,
    xUnlock,
    xCheckReservedLock,
    xFileControl,
    xSectorSize,
    xDeviceCharacteristics,
    xShmMap,
    xShmLock,
    xShmBarrier,
    xShmUnmap,
    xFetch,
    xUnfetch,
};

// MARK: the VFS

static int vfsOpen(sqlite3_vfs *vfs, const char *zName, sqlite3_file *f, int flags,
                   int *outFlags) {
  (void)vfs;
  SFBufFile *p = (SFBufFile *)f;
  memset(p, 0, sizeof(*p));
  p->real = (sqlite3_file *)((char *)p + ROUND8(sizeof(SFBufFile)));
  int rc = rootVfs->xOpen(rootVfs, zName, p->real, flags, outFlags);
  if (rc != SQLITE_OK || !p->real->pMethods) {
    // SQLite calls xClose only when pMethods is set; the unix VFS cleaned up after itself.
    p->base.pMethods = 0;
    return rc;
  }
  p->base.pMethods = &sfbufIoMethods;
  if ((flags & SQLITE_OPEN_MAIN_DB) && zName) {
    // The unix file must never map anything itself: its own limit stays 0.
    sqlite3_int64 zero = 0;
    p->real->pMethods->xFileControl(p->real, SQLITE_FCNTL_MMAP_SIZE, &zero);
    char *error = 0;
    p->state = sfbufsqlite_file_open(zName, sqlite3_uri_parameter(zName, "nsfbufs"),
                                     sqlite3_uri_parameter(zName, "direct"),
                                     sqlite3_uri_parameter(zName, "policy"),
                                     sqlite3_uri_parameter(zName, "admit"), &error);
    if (!p->state) {
      // Opened, so that SQLite can close it; locked, never: see xLock and the
      // connection check in sfbufsqlite_connection_init, which gives the message.
      p->refusal = error ? error : strdup("sfbuf: the database could not be opened");
      sqlite3_log(SQLITE_CANTOPEN, "%s", p->refusal);
    }
  }
  return SQLITE_OK;
}

static int vfsDelete(sqlite3_vfs *v, const char *z, int sync) {
  (void)v;
  return rootVfs->xDelete(rootVfs, z, sync);
}
static int vfsAccess(sqlite3_vfs *v, const char *z, int flags, int *out) {
  (void)v;
  return rootVfs->xAccess(rootVfs, z, flags, out);
}
static int vfsFullPathname(sqlite3_vfs *v, const char *z, int n, char *out) {
  (void)v;
  return rootVfs->xFullPathname(rootVfs, z, n, out);
}
static void *vfsDlOpen(sqlite3_vfs *v, const char *z) {
  (void)v;
  return rootVfs->xDlOpen(rootVfs, z);
}
static void vfsDlError(sqlite3_vfs *v, int n, char *z) {
  (void)v;
  rootVfs->xDlError(rootVfs, n, z);
}
static void (*vfsDlSym(sqlite3_vfs *v, void *h, const char *z))(void) {
  (void)v;
  return rootVfs->xDlSym(rootVfs, h, z);
}
static void vfsDlClose(sqlite3_vfs *v, void *h) {
  (void)v;
  rootVfs->xDlClose(rootVfs, h);
}
static int vfsRandomness(sqlite3_vfs *v, int n, char *z) {
  (void)v;
  return rootVfs->xRandomness(rootVfs, n, z);
}
static int vfsSleep(sqlite3_vfs *v, int us) {
  (void)v;
  return rootVfs->xSleep(rootVfs, us);
}
static int vfsCurrentTime(sqlite3_vfs *v, double *t) {
  (void)v;
  return rootVfs->xCurrentTime(rootVfs, t);
}
static int vfsGetLastError(sqlite3_vfs *v, int n, char *z) {
  (void)v;
  return rootVfs->xGetLastError(rootVfs, n, z);
}
static int vfsCurrentTimeInt64(sqlite3_vfs *v, sqlite3_int64 *t) {
  (void)v;
  return rootVfs->xCurrentTimeInt64(rootVfs, t);
}

static int registerResult = SQLITE_OK;
static pthread_once_t registerOnce = PTHREAD_ONCE_INIT;

static void registerVfs(void) {
  rootVfs = sqlite3_vfs_find("unix");
  if (!rootVfs || rootVfs->iVersion < 2) {
    registerResult = SQLITE_ERROR;
    return;
  }
  sfbufVfs.iVersion = 2;
  sfbufVfs.szOsFile = ROUND8(sizeof(SFBufFile)) + rootVfs->szOsFile;
  sfbufVfs.mxPathname = rootVfs->mxPathname;
  sfbufVfs.zName = "sfbuf";
  sfbufVfs.xOpen = vfsOpen;
  sfbufVfs.xDelete = vfsDelete;
  sfbufVfs.xAccess = vfsAccess;
  sfbufVfs.xFullPathname = vfsFullPathname;
  sfbufVfs.xDlOpen = vfsDlOpen;
  sfbufVfs.xDlError = vfsDlError;
  sfbufVfs.xDlSym = vfsDlSym;
  sfbufVfs.xDlClose = vfsDlClose;
  sfbufVfs.xRandomness = vfsRandomness;
  sfbufVfs.xSleep = vfsSleep;
  sfbufVfs.xCurrentTime = vfsCurrentTime;
  sfbufVfs.xGetLastError = vfsGetLastError;
  sfbufVfs.xCurrentTimeInt64 = vfsCurrentTimeInt64;
  registerResult = sqlite3_vfs_register(&sfbufVfs, 0);
}

// MARK: sfbuf_stats()

// The sfbuf file of schema `zDb` of `db`, or NULL when that database is not on this VFS.
static SFBufFile *sfbufFileOf(sqlite3 *db, const char *zDb) {
  sqlite3_file *f = 0;
  if (sqlite3_file_control(db, zDb, SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f) return 0;
  return f->pMethods == &sfbufIoMethods ? (SFBufFile *)f : 0;
}

static void statsFunction(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *zDb = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : "main";
  if (!zDb) zDb = "main";
  SFBufFile *p = sfbufFileOf(sqlite3_context_db_handle(ctx), zDb);
  if (!p || !p->state) {
    char *msg = sqlite3_mprintf("sfbuf_stats: database \"%s\" is not opened with vfs=sfbuf", zDb);
    sqlite3_result_error(ctx, msg, -1);
    sqlite3_free(msg);
    return;
  }
  char *text = sfbufsqlite_file_stats(p->state);
  sqlite3_result_text(ctx, text, -1, SQLITE_TRANSIENT);
  free(text);
}

// MARK: entry points

int sfbufsqlite_connection_init(sqlite3 *db, char **pzErrMsg,
                                const sqlite3_api_routines *pApi) {
  SQLITE_EXTENSION_INIT2(pApi);
  pthread_once(&registerOnce, registerVfs);
  if (registerResult != SQLITE_OK) {
    *pzErrMsg = sqlite3_mprintf("sfbuf: cannot register the VFS (no \"unix\" VFS to wrap)");
    return registerResult;
  }
  int rc = sqlite3_create_function_v2(db, "sfbuf_stats", 0, SQLITE_UTF8, 0, statsFunction, 0,
                                      0, 0);
  if (rc == SQLITE_OK)
    rc = sqlite3_create_function_v2(db, "sfbuf_stats", 1, SQLITE_UTF8, 0, statsFunction, 0, 0,
                                    0);
  if (rc != SQLITE_OK) return rc;
  SFBufFile *p = sfbufFileOf(db, "main");
  if (p && p->refusal) {
    *pzErrMsg = sqlite3_mprintf("%s", p->refusal);
    return SQLITE_ERROR;
  }
  return SQLITE_OK;
}

int sqlite3_sfbufsqlite_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  int rc = sfbufsqlite_connection_init(db, pzErrMsg, pApi);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_auto_extension((void (*)(void))sfbufsqlite_connection_init);
  return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}
