// lunfs's own FUSE front, the C half (issue 12): libfuse3's low-level API under N-API.
//
// Several loop threads (receive_loop: libfuse's receive/process cycle) read requests from
// /dev/fuse. Each request becomes a small struct on one queue and the thread goes back to reading at once: no FUSE thread ever
// waits for JavaScript. The first request queued after a drain wakes the JS thread once
// (napi_threadsafe_function); JS then takes every queued request in one batch. JS answers each with
// reply(id, errno, ...), which calls fuse_reply_* from the JS thread (libfuse allows replies from
// any thread). C keeps no file-system state: inode numbers, names and handles are JS's.
//
// Invariants: a request struct is owned by the queue until drained, then by JS until reply(); a
// reply frees it, and a second reply with the same id is refused (the magic is cleared). Loop
// threads read requests straight into slots, buffers JS lent for the mount, so a write's payload
// reaches JS where the kernel put it, with no copy; only when every slot is lent out is a request
// read into a thread's own buffer and its payload copied (into a slot freed meanwhile, or into
// memory of its own that JS's Buffer frees).
// After stop() no reply reaches libfuse any more. Requests are 1 MiB at most (max_write, and the
// kernel's max_pages that libfuse derives from it).

#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <errno.h>
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>

#define REQUEST_MAGIC 0x6c756e66u
#define MAX_REQUEST_BYTES (1u << 20)
#define LOOP_THREADS 4
#define MAX_SLOTS 64
// A slot is one request's receive buffer: a 4 KiB page of room for the headers, then 1 MiB. A
// loop thread reads /dev/fuse at SLOT_HEADER_ROOM - WRITE_HEADERS into its slot, so that a
// write's payload (after fuse_in_header and fuse_write_in, 40 + 40 bytes) starts on the page
// boundary, and hands the slot itself to JS: the payload is never copied in user space.
#define SLOT_HEADER_ROOM 4096u
#define WRITE_HEADERS 80u
#define SLOT_BYTES (SLOT_HEADER_ROOM + MAX_REQUEST_BYTES)

enum operation {
  OP_LOOKUP = 1, OP_GETATTR, OP_SETATTR, OP_READDIR, OP_OPEN, OP_RELEASE, OP_READ, OP_WRITE,
  OP_FLUSH, OP_FSYNC, OP_CREATE, OP_UNLINK, OP_STATFS, OP_FALLOCATE,
};

struct request {
  uint32_t magic;
  int operation;
  fuse_req_t fuse_request;
  uint64_t inode;
  uint64_t handle;
  int64_t offset;
  uint64_t size;
  uint32_t mode;   // create: the file mode; fallocate: the mode bits; setattr: the new mode
  uint32_t flags;  // open/create: open flags; setattr: the to_set mask; fsync: datasync
  uint32_t uid, gid; // setattr: the new owner
  char *name;
  char *data;      // write payload (ownership passes to the JS Buffer when drained)
  int slot;        // write payload in JS's slot buffer number slot instead (-1: none)
  uint32_t slot_offset; // where in that slot the payload starts
  struct fuse_file_info file_info;
  struct request *next;
};

struct front {
  struct fuse_session *session;
  pthread_t loop_thread;
  int loop_started;
  napi_threadsafe_function wake;
  pthread_mutex_t lock;
  struct request *head, *tail;
  int wake_pending;
  int spinning;    // the JS thread is in poll(): it drains the queue itself, no wake needed
  int stopped;
  // Write payload slots: Buffers JS made once (SLOT_BYTES each) and keeps alive for the mount. Each
  // loop thread receives requests into a free one; a write keeps it (JS frees it with reply()),
  // so no copy, no per-write allocation and no finalizer for V8's GC.
  char *slots[MAX_SLOTS];
  int slot_used[MAX_SLOTS];
  int slot_count;
  // Debug counters, read by stats(): how many requests, and how many bytes the largest write/read had.
  uint64_t requests, batches, polled_batches, largest_write, largest_read, writes_of_max_size;
};

static struct front *the_front; // one mount per process

// ------------------------------------------------------------------------------------------------
// The FUSE side: queue requests

static void enqueue(struct front *front, struct request *request) {
  request->magic = REQUEST_MAGIC;
  int wake = 0;
  pthread_mutex_lock(&front->lock);
  if (front->stopped) {
    pthread_mutex_unlock(&front->lock);
    fuse_reply_err(request->fuse_request, ENODEV);
    free(request->name);
    free(request->data);
    free(request);
    return;
  }
  if (front->tail) front->tail->next = request; else front->head = request;
  front->tail = request;
  front->requests++;
  if (!front->wake_pending) {
    front->wake_pending = 1;
    wake = !front->spinning;
  }
  pthread_mutex_unlock(&front->lock);
  if (wake) napi_call_threadsafe_function(front->wake, NULL, napi_tsfn_nonblocking);
}

static struct request *new_request(fuse_req_t fuse_request, int operation, fuse_ino_t inode) {
  struct request *request = calloc(1, sizeof *request);
  if (!request) {
    fuse_reply_err(fuse_request, ENOMEM);
    return NULL;
  }
  request->fuse_request = fuse_request;
  request->operation = operation;
  request->inode = inode;
  return request;
}

static struct front *front_of(fuse_req_t fuse_request) { return fuse_req_userdata(fuse_request); }

static void queue_simple(fuse_req_t fuse_request, int operation, fuse_ino_t inode, struct fuse_file_info *file_info) {
  struct request *request = new_request(fuse_request, operation, inode);
  if (!request) return;
  if (file_info) {
    request->handle = file_info->fh;
    request->file_info = *file_info;
  }
  enqueue(front_of(fuse_request), request);
}

static void queue_named(fuse_req_t fuse_request, int operation, fuse_ino_t parent, const char *name) {
  struct request *request = new_request(fuse_request, operation, parent);
  if (!request) return;
  request->name = strdup(name);
  if (!request->name) {
    free(request);
    fuse_reply_err(fuse_request, ENOMEM);
    return;
  }
  enqueue(front_of(fuse_request), request);
}

static void op_init(void *userdata, struct fuse_conn_info *connection) {
  (void)userdata;
  // libfuse derives max_pages (256 with 4 KiB pages) from max_write and clamps it to its buffer.
  connection->max_write = MAX_REQUEST_BYTES;
  if (connection->capable & FUSE_CAP_SPLICE_READ) connection->want &= ~FUSE_CAP_SPLICE_READ;
}

static void op_lookup(fuse_req_t r, fuse_ino_t parent, const char *name) { queue_named(r, OP_LOOKUP, parent, name); }
static void op_unlink(fuse_req_t r, fuse_ino_t parent, const char *name) { queue_named(r, OP_UNLINK, parent, name); }
static void op_getattr(fuse_req_t r, fuse_ino_t ino, struct fuse_file_info *fi) { queue_simple(r, OP_GETATTR, ino, fi); }
static void op_open(fuse_req_t r, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_OPEN, ino);
  if (!request) return;
  request->flags = (uint32_t)fi->flags;
  request->file_info = *fi;
  enqueue(front_of(r), request);
}
static void op_release(fuse_req_t r, fuse_ino_t ino, struct fuse_file_info *fi) { queue_simple(r, OP_RELEASE, ino, fi); }
static void op_flush(fuse_req_t r, fuse_ino_t ino, struct fuse_file_info *fi) { queue_simple(r, OP_FLUSH, ino, fi); }
static void op_fsync(fuse_req_t r, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_FSYNC, ino);
  if (!request) return;
  request->handle = fi->fh;
  request->flags = (uint32_t)datasync;
  enqueue(front_of(r), request);
}
static void op_statfs(fuse_req_t r, fuse_ino_t ino) { queue_simple(r, OP_STATFS, ino, NULL); }

static void op_setattr(fuse_req_t r, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_SETATTR, ino);
  if (!request) return;
  request->flags = (uint32_t)to_set;
  request->size = (to_set & FUSE_SET_ATTR_SIZE) ? (uint64_t)attr->st_size : 0;
  request->mode = (uint32_t)attr->st_mode;
  request->uid = (uint32_t)attr->st_uid;
  request->gid = (uint32_t)attr->st_gid;
  if (fi) request->handle = fi->fh;
  enqueue(front_of(r), request);
}

static void op_readdir(fuse_req_t r, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_READDIR, ino);
  if (!request) return;
  request->size = size;
  request->offset = offset;
  request->handle = fi->fh;
  enqueue(front_of(r), request);
}

static void op_read(fuse_req_t r, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_READ, ino);
  if (!request) return;
  request->size = size;
  request->offset = offset;
  request->handle = fi->fh;
  enqueue(front_of(r), request);
}

/** A free slot, now marked used, or -1. */
static int take_free_slot(struct front *front) {
  int slot = -1;
  pthread_mutex_lock(&front->lock);
  for (int index = 0; index < front->slot_count; index++) {
    if (!front->slot_used[index]) {
      front->slot_used[index] = 1;
      slot = index;
      break;
    }
  }
  pthread_mutex_unlock(&front->lock);
  return slot;
}

/** Gives a slot back (JS's reply, or a loop thread that stops). */
static void release_slot(struct front *front, int slot) {
  pthread_mutex_lock(&front->lock);
  front->slot_used[slot] = 0;
  pthread_mutex_unlock(&front->lock);
}

// The slot the calling loop thread received the current request into (-1: its own heap buffer),
// and whether a write took it (the thread then takes another before its next read).
static __thread int receiving_slot = -1;
static __thread int receiving_slot_taken;

static void op_write(fuse_req_t r, fuse_ino_t ino, const char *data, size_t size, off_t offset, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_WRITE, ino);
  if (!request) return;
  struct front *front = front_of(r);
  request->slot = -1;
  request->size = size;
  request->offset = offset;
  request->handle = fi->fh;
  if (receiving_slot >= 0 && size <= MAX_REQUEST_BYTES) {
    char *base = front->slots[receiving_slot];
    if (data >= base && data + size <= base + SLOT_BYTES) { // the payload is in the slot: lend it to JS
      request->slot = receiving_slot;
      request->slot_offset = (uint32_t)(data - base);
      receiving_slot_taken = 1;
      enqueue(front, request);
      return;
    }
  }
  // Received into the thread's heap buffer (every slot was lent out): copy once, into a free slot
  // if one came back meanwhile, else into memory of its own that JS's Buffer frees.
  if (size <= MAX_REQUEST_BYTES) request->slot = take_free_slot(front);
  if (request->slot >= 0) {
    request->slot_offset = SLOT_HEADER_ROOM;
    memcpy(front->slots[request->slot] + SLOT_HEADER_ROOM, data, size);
    enqueue(front, request);
    return;
  }
  request->data = malloc(size ? size : 1);
  if (!request->data) {
    free(request);
    fuse_reply_err(r, ENOMEM);
    return;
  }
  memcpy(request->data, data, size);
  enqueue(front, request);
}

static void op_create(fuse_req_t r, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_CREATE, parent);
  if (!request) return;
  request->name = strdup(name);
  if (!request->name) {
    free(request);
    fuse_reply_err(r, ENOMEM);
    return;
  }
  request->mode = (uint32_t)mode;
  request->flags = (uint32_t)fi->flags;
  request->file_info = *fi;
  enqueue(front_of(r), request);
}

static void op_fallocate(fuse_req_t r, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  struct request *request = new_request(r, OP_FALLOCATE, ino);
  if (!request) return;
  request->mode = (uint32_t)mode;
  request->offset = offset;
  request->size = (uint64_t)length;
  request->handle = fi->fh;
  enqueue(front_of(r), request);
}

// JS keeps every inode for the life of the mount (a path table): forgets need no answer from it.
static void op_forget(fuse_req_t r, fuse_ino_t ino, uint64_t lookups) { (void)ino; (void)lookups; fuse_reply_none(r); }
static void op_forget_multi(fuse_req_t r, size_t count, struct fuse_forget_data *forgets) { (void)count; (void)forgets; fuse_reply_none(r); }

static const struct fuse_lowlevel_ops operations = {
  .init = op_init,
  .lookup = op_lookup,
  .forget = op_forget,
  .forget_multi = op_forget_multi,
  .getattr = op_getattr,
  .setattr = op_setattr,
  .unlink = op_unlink,
  .open = op_open,
  .read = op_read,
  .write = op_write,
  .flush = op_flush,
  .release = op_release,
  .fsync = op_fsync,
  .readdir = op_readdir,
  .statfs = op_statfs,
  .create = op_create,
  .fallocate = op_fallocate,
};


/**
 * One loop thread: reads a request from /dev/fuse into a slot and lets libfuse dispatch it to the
 * op_* functions above (which only queue it). libfuse's own fuse_session_loop_mt reads into a
 * buffer of its own, which a write would have to be copied out of; this loop is the same
 * receive/process cycle with the buffer chosen here.
 */
static void *receive_loop(void *argument) {
  struct front *front = argument;
  int fd = fuse_session_fd(front->session);
  char *heap = NULL; // used only while every slot is lent out
  int slot = -1;
  while (!fuse_session_exited(front->session)) {
    if (slot < 0) slot = take_free_slot(front);
    char *base;
    if (slot >= 0) base = front->slots[slot];
    else {
      if (!heap && !(heap = malloc(SLOT_BYTES))) {
        perror("lunfs_fuse: receive buffer");
        break;
      }
      base = heap;
    }
    char *start = base + SLOT_HEADER_ROOM - WRITE_HEADERS;
    receiving_slot = slot;
    receiving_slot_taken = 0;
    ssize_t count = read(fd, start, SLOT_BYTES - (SLOT_HEADER_ROOM - WRITE_HEADERS));
    if (count < 0) {
      int error = errno;
      if (error == EINTR || error == EAGAIN || error == ENOENT) continue; // ENOENT: the request was interrupted
      if (error != ENODEV) fprintf(stderr, "lunfs_fuse: read from /dev/fuse: %s\n", strerror(error));
      fuse_session_exit(front->session); // ENODEV: unmounted
      break;
    }
    if (count == 0) {
      fuse_session_exit(front->session);
      break;
    }
    struct fuse_buf buffer = { .size = (size_t)count, .flags = 0, .mem = start, .fd = -1, .pos = 0 };
    fuse_session_process_buf(front->session, &buffer);
    if (receiving_slot_taken) slot = -1; // JS holds it until reply()
  }
  receiving_slot = -1;
  if (slot >= 0) release_slot(front, slot);
  free(heap);
  return NULL;
}

static void *loop_main(void *argument) {
  struct front *front = argument;
  // Signals belong to Node's thread; the loop threads inherit this mask.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  pthread_t others[LOOP_THREADS - 1];
  int started = 0;
  for (int index = 0; index < LOOP_THREADS - 1; index++) {
    if (pthread_create(&others[started], NULL, receive_loop, front) == 0) started++;
  }
  receive_loop(front);
  for (int index = 0; index < started; index++) pthread_join(others[index], NULL);
  return NULL;
}

// ------------------------------------------------------------------------------------------------
// The JS side

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "lunfs_fuse: " #call " failed"); return NULL; } } while (0)

static napi_value number(napi_env env, double value) {
  napi_value result;
  napi_create_double(env, value, &result);
  return result;
}

static void set_number(napi_env env, napi_value object, const char *key, double value) {
  napi_set_named_property(env, object, key, number(env, value));
}

static void free_payload(napi_env env, void *data, void *hint) { (void)env; (void)hint; free(data); }

/** Takes every queued request off the queue (the JS thread, after a wake or in poll()). */
static struct request *take_queue(struct front *front) {
  pthread_mutex_lock(&front->lock);
  struct request *list = front->head;
  front->head = front->tail = NULL;
  front->wake_pending = 0;
  front->spinning = 0;
  if (list) front->batches++;
  pthread_mutex_unlock(&front->lock);
  return list;
}

/** The JS array of a list of requests, one object per request (see NativeRequest in native-front.ts). */
static napi_value batch_of(napi_env env, struct front *front, struct request *list) {
  size_t count = 0;
  for (struct request *request = list; request; request = request->next) count++;
  napi_value batch;
  napi_create_array_with_length(env, count, &batch);
  uint32_t index = 0;
  for (struct request *request = list; request;) {
    struct request *next = request->next;
    request->next = NULL;
    napi_value item;
    napi_create_object(env, &item);
    set_number(env, item, "op", request->operation);
    set_number(env, item, "id", (double)(uintptr_t)request); // a pointer fits a double exactly (48 bits)
    set_number(env, item, "ino", (double)request->inode);
    set_number(env, item, "fh", (double)request->handle);
    set_number(env, item, "offset", (double)request->offset);
    set_number(env, item, "size", (double)request->size);
    set_number(env, item, "mode", request->mode);
    set_number(env, item, "flags", request->flags);
    if (request->operation == OP_SETATTR) {
      set_number(env, item, "uid", request->uid);
      set_number(env, item, "gid", request->gid);
    }
    if (request->name) {
      napi_value name;
      napi_create_string_utf8(env, request->name, NAPI_AUTO_LENGTH, &name);
      napi_set_named_property(env, item, "name", name);
    }
    if (request->operation == OP_WRITE && request->slot >= 0) {
      set_number(env, item, "slot", request->slot);
      set_number(env, item, "slotOffset", request->slot_offset);
      if (request->size > front->largest_write) front->largest_write = request->size;
      if (request->size == MAX_REQUEST_BYTES) front->writes_of_max_size++;
    }
    if (request->data) {
      napi_value buffer;
      if (request->size > front->largest_write) front->largest_write = request->size;
      if (request->size == MAX_REQUEST_BYTES) front->writes_of_max_size++;
      if (napi_create_external_buffer(env, request->size, request->data, free_payload, NULL, &buffer) == napi_ok) {
        request->data = NULL;
      } else {
        napi_create_buffer_copy(env, request->size, request->data, NULL, &buffer);
        free(request->data);
        request->data = NULL;
      }
      napi_set_named_property(env, item, "data", buffer);
    }
    if (request->operation == OP_READ && request->size > front->largest_read) front->largest_read = request->size;
    napi_set_element(env, batch, index++, item);
    request = next;
  }
  return batch;
}

/** Runs on the JS thread after a wake: hands every queued request to JS as one array. */
static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  (void)data;
  struct front *front = context;
  if (!env || !front) return;
  struct request *list = take_queue(front);
  if (!list) return;
  napi_value batch = batch_of(env, front, list);
  napi_value global;
  napi_get_global(env, &global);
  napi_call_function(env, global, callback, 1, &batch, NULL);
}

static double monotonic_us(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec * 1e6 + (double)now.tv_nsec / 1e3;
}

/**
 * poll(spinMicros): waits on the JS thread, spinning, up to spinMicros for a request; returns the
 * batch (as onBatch gets it) or undefined. While it spins, the loop threads queue without waking
 * the JS thread (no eventfd write, no epoll return): at queue depth 1 the next request usually
 * comes within tens of microseconds of a reply, and a wake-up on the reference VM costs about as
 * much. JS calls it only right after serving a batch, so an idle server does not spin.
 */
static napi_value js_poll(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double spin_us = 0;
  if (argc < 1 || napi_get_value_double(env, argv[0], &spin_us) != napi_ok || !(spin_us >= 0) || spin_us > 10000) {
    napi_throw_type_error(env, NULL, "poll(spinMicros): 0 to 10000");
    return NULL;
  }
  struct front *front = the_front;
  napi_value result;
  napi_get_undefined(env, &result);
  if (!front) return result;
  pthread_mutex_lock(&front->lock);
  int idle = front->head == NULL && !front->stopped;
  if (idle) front->spinning = 1;
  pthread_mutex_unlock(&front->lock);
  if (idle) {
    double deadline = monotonic_us() + spin_us;
    while (__atomic_load_n(&front->head, __ATOMIC_ACQUIRE) == NULL && monotonic_us() < deadline) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }
  struct request *list = take_queue(front); // also ends the spin: later requests wake JS again
  if (!list) return result;
  pthread_mutex_lock(&front->lock);
  front->polled_batches++;
  pthread_mutex_unlock(&front->lock);
  return batch_of(env, front, list);
}

static int get_uint64(napi_env env, napi_value value, uint64_t *out) {
  double number_value;
  if (napi_get_value_double(env, value, &number_value) != napi_ok || number_value < 0) return 0;
  *out = (uint64_t)number_value;
  return 1;
}

static const double attribute_timeout_seconds = 1.0;

/**
 * [ino, mode, nlink, size, uid, gid, timeSeconds, volatile?] → struct stat, and how long the
 * kernel may cache it: volatile (1) for a file whose size changes under the reader at any moment
 * (control/status, whose open handle freezes a text of its own length): 0 s, so that an fstat
 * after open asks us (getattr with the handle) instead of answering a size cached at lookup.
 */
static int read_attributes(napi_env env, napi_value array, struct stat *attributes, double *timeout_seconds) {
  *timeout_seconds = attribute_timeout_seconds;
  uint32_t length = 0;
  if (napi_get_array_length(env, array, &length) == napi_ok && length >= 8) {
    napi_value element;
    uint64_t is_volatile = 0;
    if (napi_get_element(env, array, 7, &element) == napi_ok && get_uint64(env, element, &is_volatile) && is_volatile)
      *timeout_seconds = 0;
  }
  uint64_t fields[7];
  for (uint32_t index = 0; index < 7; index++) {
    napi_value element;
    if (napi_get_element(env, array, index, &element) != napi_ok || !get_uint64(env, element, &fields[index])) return 0;
  }
  memset(attributes, 0, sizeof *attributes);
  attributes->st_ino = fields[0];
  attributes->st_mode = (mode_t)fields[1];
  attributes->st_nlink = (nlink_t)fields[2];
  attributes->st_size = (off_t)fields[3];
  attributes->st_uid = (uid_t)fields[4];
  attributes->st_gid = (gid_t)fields[5];
  attributes->st_atim.tv_sec = attributes->st_mtim.tv_sec = attributes->st_ctim.tv_sec = (time_t)fields[6];
  attributes->st_blksize = 4096;
  attributes->st_blocks = (blkcnt_t)((fields[3] + 511) / 512);
  return 1;
}

/** Builds the readdir answer from entries [[name, ino, mode], ...]: those after offset that fit. */
static void reply_directory(napi_env env, struct request *request, napi_value entries) {
  uint32_t length = 0;
  napi_get_array_length(env, entries, &length);
  size_t capacity = request->size;
  char *buffer = malloc(capacity ? capacity : 1);
  if (!buffer) {
    fuse_reply_err(request->fuse_request, ENOMEM);
    return;
  }
  size_t used = 0;
  for (uint32_t index = (uint32_t)request->offset; index < length; index++) {
    napi_value entry, name_value, ino_value, mode_value;
    napi_get_element(env, entries, index, &entry);
    napi_get_element(env, entry, 0, &name_value);
    napi_get_element(env, entry, 1, &ino_value);
    napi_get_element(env, entry, 2, &mode_value);
    char name[256];
    size_t name_length = 0;
    napi_get_value_string_utf8(env, name_value, name, sizeof name, &name_length);
    uint64_t ino = 0, mode = 0;
    get_uint64(env, ino_value, &ino);
    get_uint64(env, mode_value, &mode);
    struct stat attributes = {.st_ino = ino, .st_mode = (mode_t)mode};
    size_t needed = fuse_add_direntry(request->fuse_request, buffer + used, capacity - used, name, &attributes, index + 1);
    if (needed > capacity - used) break;
    used += needed;
  }
  fuse_reply_buf(request->fuse_request, buffer, used);
  free(buffer);
}

/**
 * reply(id, errno, value, handle, directIo): answers one request. errno is positive (0 = success).
 * value by operation: lookup/getattr/setattr/create: attributes; read: a Buffer; write: the count;
 * readdir: entries; statfs: [bsize, blocks, bfree, bavail, files, ffree, namemax]; open/create:
 * handle (and directIo: no page cache, for files whose size is not known before they are read).
 */
static napi_value js_reply(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint64_t id = 0, error = 0;
  if (argc < 2 || !get_uint64(env, argv[0], &id) || !get_uint64(env, argv[1], &error)) {
    napi_throw_type_error(env, NULL, "reply(id, errno, ...): id and errno must be numbers");
    return NULL;
  }
  struct request *request = (struct request *)(uintptr_t)id;
  if (!request || request->magic != REQUEST_MAGIC) {
    napi_throw_error(env, NULL, "reply: unknown or already answered request id");
    return NULL;
  }
  request->magic = 0;
  struct front *front = the_front;
  if (front && request->operation == OP_WRITE && request->slot >= 0) release_slot(front, request->slot);
  fuse_req_t r = request->fuse_request;
  if (front && front->stopped) goto done; // the session is gone: nothing to answer
  if (error != 0) {
    fuse_reply_err(r, (int)error);
    goto done;
  }
  switch (request->operation) {
    case OP_LOOKUP:
    case OP_CREATE: {
      struct fuse_entry_param entry;
      memset(&entry, 0, sizeof entry);
      double attr_timeout = attribute_timeout_seconds;
      if (argc < 3 || !read_attributes(env, argv[2], &entry.attr, &attr_timeout)) { fuse_reply_err(r, EIO); break; }
      entry.ino = entry.attr.st_ino;
      entry.generation = 1;
      entry.attr_timeout = attr_timeout;
      entry.entry_timeout = attribute_timeout_seconds;
      if (request->operation == OP_LOOKUP) { fuse_reply_entry(r, &entry); break; }
      uint64_t handle = 0;
      bool direct_io = false;
      if (argc >= 4) get_uint64(env, argv[3], &handle);
      if (argc >= 5) napi_get_value_bool(env, argv[4], &direct_io);
      request->file_info.fh = handle;
      request->file_info.direct_io = direct_io;
      fuse_reply_create(r, &entry, &request->file_info);
      break;
    }
    case OP_GETATTR:
    case OP_SETATTR: {
      struct stat attributes;
      double attr_timeout = attribute_timeout_seconds;
      if (argc < 3 || !read_attributes(env, argv[2], &attributes, &attr_timeout)) { fuse_reply_err(r, EIO); break; }
      fuse_reply_attr(r, &attributes, attr_timeout);
      break;
    }
    case OP_OPEN: {
      uint64_t handle = 0;
      bool direct_io = false;
      if (argc >= 4) get_uint64(env, argv[3], &handle);
      if (argc >= 5) napi_get_value_bool(env, argv[4], &direct_io);
      request->file_info.fh = handle;
      request->file_info.direct_io = direct_io;
      fuse_reply_open(r, &request->file_info);
      break;
    }
    case OP_READ: {
      void *data = NULL;
      size_t length = 0;
      if (argc >= 3 && napi_get_buffer_info(env, argv[2], &data, &length) == napi_ok) {
        if (length > request->size) length = request->size;
        fuse_reply_buf(r, data, length);
      } else {
        fuse_reply_buf(r, NULL, 0);
      }
      break;
    }
    case OP_WRITE: {
      uint64_t count = 0;
      if (argc >= 3) get_uint64(env, argv[2], &count);
      if (count > request->size) count = request->size;
      fuse_reply_write(r, count);
      break;
    }
    case OP_READDIR:
      if (argc >= 3) reply_directory(env, request, argv[2]); else fuse_reply_buf(r, NULL, 0);
      break;
    case OP_STATFS: {
      uint64_t fields[7] = {0};
      for (uint32_t index = 0; argc >= 3 && index < 7; index++) {
        napi_value element;
        if (napi_get_element(env, argv[2], index, &element) == napi_ok) get_uint64(env, element, &fields[index]);
      }
      struct statvfs stats;
      memset(&stats, 0, sizeof stats);
      stats.f_bsize = stats.f_frsize = fields[0];
      stats.f_blocks = fields[1];
      stats.f_bfree = fields[2];
      stats.f_bavail = fields[3];
      stats.f_files = fields[4];
      stats.f_ffree = stats.f_favail = fields[5];
      stats.f_namemax = fields[6];
      fuse_reply_statfs(r, &stats);
      break;
    }
    default:
      fuse_reply_err(r, 0);
  }
done:
  free(request->name);
  free(request->data);
  free(request);
  return NULL;
}

/** start(mountpoint, options string, onBatch, slots): mounts and starts the loop threads; slots: Buffers of slotBytes (4 KiB + 1 MiB) JS keeps alive until stop(). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (the_front) {
    napi_throw_error(env, NULL, "lunfs_fuse: already mounted in this process");
    return NULL;
  }
  char mountpoint[4096], options[1024];
  if (argc < 3 || napi_get_value_string_utf8(env, argv[0], mountpoint, sizeof mountpoint, NULL) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], options, sizeof options, NULL) != napi_ok) {
    napi_throw_type_error(env, NULL, "start(mountpoint, options, onBatch)");
    return NULL;
  }
  struct front *front = calloc(1, sizeof *front);
  if (!front) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  pthread_mutex_init(&front->lock, NULL);
  uint32_t slot_total = 0;
  if (argc >= 4 && napi_get_array_length(env, argv[3], &slot_total) == napi_ok) {
    for (uint32_t index = 0; index < slot_total && front->slot_count < MAX_SLOTS; index++) {
      napi_value element;
      void *data = NULL;
      size_t length = 0;
      if (napi_get_element(env, argv[3], index, &element) == napi_ok && napi_get_buffer_info(env, element, &data, &length) == napi_ok && length >= SLOT_BYTES) {
        front->slots[front->slot_count++] = data;
      }
    }
  }
  napi_value resource_name;
  napi_create_string_utf8(env, "lunfs-fuse", NAPI_AUTO_LENGTH, &resource_name);
  if (napi_create_threadsafe_function(env, argv[2], NULL, resource_name, 0, 1, NULL, NULL, front, call_js, &front->wake) != napi_ok) {
    free(front);
    napi_throw_error(env, NULL, "lunfs_fuse: napi_create_threadsafe_function failed");
    return NULL;
  }
  char *arguments[] = {"lunfs", "-o", options, NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, arguments);
  front->session = fuse_session_new(&args, &operations, sizeof operations, front);
  if (!front->session) {
    napi_release_threadsafe_function(front->wake, napi_tsfn_abort);
    free(front);
    napi_throw_error(env, "EINVAL", "fuse_session_new failed (bad options?)");
    return NULL;
  }
  if (fuse_session_mount(front->session, mountpoint) != 0) {
    fuse_session_destroy(front->session);
    napi_release_threadsafe_function(front->wake, napi_tsfn_abort);
    free(front);
    napi_throw_error(env, "EIO", "fuse_session_mount failed");
    return NULL;
  }
  the_front = front;
  if (pthread_create(&front->loop_thread, NULL, loop_main, front) != 0) {
    fuse_session_unmount(front->session);
    fuse_session_destroy(front->session);
    napi_release_threadsafe_function(front->wake, napi_tsfn_abort);
    the_front = NULL;
    free(front);
    napi_throw_error(env, "EIO", "could not start the FUSE loop thread");
    return NULL;
  }
  front->loop_started = 1;
  return NULL;
}

/**
 * stop(): ends the session and unmounts (lazily, as libfuse does for root). Requests still queued
 * or held by JS are dropped: the caller answers what it holds before. Returns whether the loop
 * threads ended within two seconds (they do unless files stay open on the detached mount).
 */
static napi_value js_stop(napi_env env, napi_callback_info info) {
  (void)info;
  struct front *front = the_front;
  napi_value result;
  if (!front) {
    napi_get_boolean(env, true, &result);
    return result;
  }
  pthread_mutex_lock(&front->lock);
  front->stopped = 1;
  struct request *list = front->head;
  front->head = front->tail = NULL;
  pthread_mutex_unlock(&front->lock);
  for (struct request *request = list; request;) {
    struct request *next = request->next;
    fuse_reply_err(request->fuse_request, ENODEV);
    free(request->name);
    free(request->data);
    free(request);
    request = next;
  }
  fuse_session_exit(front->session);
  fuse_session_unmount(front->session);
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 2;
  int joined = pthread_timedjoin_np(front->loop_thread, NULL, &deadline) == 0;
  if (joined) fuse_session_destroy(front->session); // else the threads still use it: leave it
  napi_release_threadsafe_function(front->wake, napi_tsfn_abort);
  the_front = NULL; // the struct itself stays allocated: late replies and threads may look at it
  napi_get_boolean(env, joined, &result);
  return result;
}

/** stats(): the debug counters. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_create_object(env, &result);
  struct front *front = the_front;
  if (!front) return result;
  pthread_mutex_lock(&front->lock);
  set_number(env, result, "requests", (double)front->requests);
  set_number(env, result, "batches", (double)front->batches);
  set_number(env, result, "polledBatches", (double)front->polled_batches);
  set_number(env, result, "largestWriteBytes", (double)front->largest_write);
  set_number(env, result, "largestReadBytes", (double)front->largest_read);
  set_number(env, result, "writesOfMaxSize", (double)front->writes_of_max_size);
  pthread_mutex_unlock(&front->lock);
  return result;
}

/** detach(path): umount2(MNT_DETACH), for a mount left stale by a killed server; returns errno. */
static napi_value js_detach(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4096];
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, NULL) != napi_ok) {
    napi_throw_type_error(env, NULL, "detach(path)");
    return NULL;
  }
  return number(env, umount2(path, MNT_DETACH) == 0 ? 0 : errno);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
    {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
    {"reply", NULL, js_reply, NULL, NULL, NULL, napi_default, NULL},
    {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
    {"detach", NULL, js_detach, NULL, NULL, NULL, napi_default, NULL},
    {"poll", NULL, js_poll, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  napi_set_named_property(env, exports, "slotBytes", number(env, SLOT_BYTES));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
