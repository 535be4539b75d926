/* daemon.c: `orch-agent run` (see daemon.h and docs/agent-protocol.md). */
#include "agent/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/cache.h"
#include "agent/exec.h"
#include "agent/exec-uids.h"
#include "agent/facts.h"
#include "agent/host.h"
#include "agent/service.h"
#include "agent/spool.h"
#include "agent/state.h"
#include "agent/transport.h"
#include "agent/unpack.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/cleanup.h"
#include "common/crypto.h"
#include "common/id.h"
#include "common/jsonv.h"
#include "common/log.h"
#include "common/relpath.h"
#include "common/printf.h"
#include "proto/agent.h"
#include "common/compat.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_NOT_ENROLLED = 3 };

#define POLL_WAIT_S         25 /* hold an exchange open this long for assignments */
#define LINK_BUSY_WAIT_S    1  /* or this long while jobs run, so their output flows */
#define LINK_MAX_REPORTS    256
#define LINK_MAX_BYTES      (2 * 1024 * 1024) /* of output in one exchange (about) */
#define REQUEST_TIMEOUT_MS  30000             /* plus the hold */
#define HEARTBEAT_DEFAULT_S 10
#define BACKOFF_MIN_MS      1000
#define BACKOFF_MAX_MS      60000
#define FLUSH_MS            10000 /* how long the link may flush at shutdown */
#define JOIN_MS             1000  /* then how long the link may take to notice */
#define JOB_GRACE_MS        10000
#define IDLE_WAIT_MS        1000 /* link: spool_sync_all() at least this often when idle */
#define STARTING_WAIT_MS    250  /* link: wait at most this long for a `started` being spooled */
#define ROTATE_BEFORE_S     (30 * 86400) /* rotate the credential when it expires sooner */
#define ROTATE_MIN_GAP_MS   3600000      /* at most one rotation attempt an hour */
#define RECOVER_KILL_MS     10000        /* bound on ending a predecessor's job tree */
#define UNPACK_TIMEOUT_MS   300000
/* Between exchanges while the server does not speak this agent's protocol version: an
 * upgrade of one side is needed, which takes minutes at best. */
#define PROTOCOL_RETRY_MS (10 * 60 * 1000)
/* Self-fencing (see daemon_fence): a job whose lease no answered exchange renewed for the
 * lease minus this margin is killed, before the server can take it back. */
#define FENCE_MARGIN_MIN_MS 2000
#define FENCE_KILL_MS       2000 /* bound on ending a job's tree (SIGKILL, no grace) */
#define FENCE_CHECK_MS      1000 /* the main thread looks at least this often */

/* spool_result.flags holds PROTO_RES_* (proto/agent.h). What the spool holds must fit the
 * protocol's reports. */
_Static_assert(LINK_MAX_REPORTS <= PROTO_SYNC_MAX_REPORTS, "reports per exchange");
_Static_assert(SPOOL_CHUNK_MAX <= PROTO_LOG_CHUNK_MAX, "a spooled chunk is one logs report");
_Static_assert(SPOOL_RESULT_MAX <= PROTO_RESULT_MAX, "a spooled result is one result report");

enum slot_state {
    SLOT_FREE,
    SLOT_RUNNING, /* the slot's worker thread runs the job (or is about to) */
    SLOT_DONE,    /* the job has finished; its `started` may still be to report */
};

struct daemon;

/* A package a job waits for; the link thread fetches it (over the one connection). */
struct fetch {
    char package_id[ID_STR_LEN];
    char sha256[CRYPTO_SHA256_HEX_LEN];
    int state; /* FETCH_* */
    char error[256];
    struct fetch *next;
};

enum { FETCH_DONE = 0, FETCH_WAITING = 1, FETCH_BUSY = 2, FETCH_FAILED = 3 };

struct slot {
    enum slot_state state;
    char job_id[ID_STR_LEN];
    int64_t epoch;
    atomic_bool cancel;
    bool lost;         /* not ours any more: drop what it spooled once it has stopped */
    bool bad;          /* the assignment failed validation: report a failure, run nothing */
    bool need_started; /* `started` not yet accepted by the server */
    bool spooling;     /* handed to the worker, not yet spooled: `started` comes within its syncs */
    /* The slot's worker: created with its first job, then kept for the next ones (a thread
     * per job would cost a clone, a stack mapping and a join each time). go: a job has been
     * handed to it; it waits on go_cond for one. Both under daemon.lock. */
    bool thread_valid; /* thread holds the worker (set once pthread_create() returned) */
    bool go;
    pthread_cond_t go_cond;
    /* The lease, as the agent must assume it: renewed_ms is when the agent *sent* the last
     * exchange whose answer renewed it (CLOCK_MONOTONIC ms), never later than the server's
     * own renewal. lapsed: the agent gave the job up (daemon_fence). */
    int64_t renewed_ms;
    bool lapsed;
    struct exec_tree tree; /* where its processes are (on_tree); tree.cgroup = tree_cgroup */
    char *tree_cgroup;
    json_t *assignment;        /* owned while RUNNING */
    struct proto_assignment a; /* assignment, decoded (borrows it); valid unless bad */
    int64_t output_bytes[2];   /* stdout, stderr of the run in progress: its job-end line's */
    pthread_t thread;
    struct daemon *d;
};

struct daemon {
    const struct agent_config *cfg;
    const char *state_dir;
    struct agent_state st;
    struct spool *spool;
    char *work_dir;
    char *cgroup_parent; /* this agent's cgroup v2 directory for jobs; NULL = none */
    /* Who jobs run as: job_user when switch_user (a root agent), else the agent's user. */
    bool switch_user;
    struct exec_user job_user;
    char job_user_name[72];
    /* exec.uid_range: each running job has a uid of its own from it (job_user is then only
     * the probe's); NULL: every job runs as job_user. */
    struct exec_uids *uids;

    pthread_mutex_t lock;     /* guards everything below and the slots */
    pthread_cond_t wake;      /* stop, slot freed, link done (CLOCK_MONOTONIC) */
    pthread_cond_t send_wake; /* new spooled data or `started` to report */
    bool stopping;            /* SIGTERM: no new jobs, running ones cancelled */
    bool sender_stop;         /* the flush time is over */
    bool send_pending;
    bool urgent;            /* a `started` or a result to report: give up a held exchange */
    bool send_done;         /* the link thread has exited */
    bool hb_kick;           /* reconnected without a heartbeat: heartbeat at once */
    struct transport *link; /* the link thread's, for transport_wakeup(); NULL when none */
    int net;                /* -1 unknown, 0 disconnected, 1 connected: logged on change */
    int64_t heartbeat_s;
    int64_t lease_ms; /* the server's agent.lease (lease_s of its answers); 0 = not known yet */
    /* st.credential may change (a rotation) while the threads run: read it with the lock
     * held; cred_gen counts the changes, so each thread updates its own transport. */
    uint64_t cred_gen;
    int64_t rotate_before_s; /* ORCH_AGENT_ROTATE_BEFORE_S */
    size_t nslots;
    struct slot *slots;
    struct cache *cache;
    struct fetch *fetches; /* waiting for the link thread */
    /* Assignments that came while their slot's worker was still finishing (its result
     * already reported, so the server counted the slot free): started by the link thread
     * as soon as the slot is. Only the link thread touches it. */
    json_t *pending;
};

/* --- small helpers ------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait on c (lock held) until woken or ms have passed. */
static void cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms)
{
    struct timespec ts;
    clock_deadline(CLOCK_COND, ms, &ts);
    pthread_cond_timedwait(c, m, &ts);
}

struct backoff {
    int64_t next_ms;
};

/* Jittered exponential backoff: a delay in [cap/2, cap], cap doubling from 1 s to 60 s. */
static int64_t backoff_next(struct backoff *b)
{
    int64_t cap = b->next_ms < BACKOFF_MIN_MS ? BACKOFF_MIN_MS : b->next_ms;
    b->next_ms = cap * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cap * 2;
    uint32_t r = 0;
    if (crypto_random(&r, sizeof(r)) < 0)
        r = (uint32_t)mono_ms();
    return cap / 2 + (int64_t)(r % (uint32_t)(cap / 2 + 1));
}

static void backoff_reset(struct backoff *b)
{
    b->next_ms = 0;
}

/* The delay after a refusal that said Retry-After (retry_ms): at least that, plus up to
 * half again so that agents told the same at once do not all come back together; never
 * shorter than the backoff due anyway, never past BACKOFF_MAX_MS. */
static int64_t backoff_retry_after(int64_t retry_ms, int64_t backoff_ms)
{
    uint32_t r = 0;
    if (crypto_random(&r, sizeof(r)) < 0)
        r = (uint32_t)mono_ms();
    int64_t ms = retry_ms + (int64_t)(r % (uint32_t)(retry_ms / 2 + 1));
    if (ms < backoff_ms)
        ms = backoff_ms;
    return ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms;
}

/* Sleep up to ms, or until the daemon stops (or *kick becomes true, when given). */
static void daemon_sleep(struct daemon *d, int64_t ms, const bool *stop, bool *kick)
{
    int64_t end = mono_ms() + ms;
    pthread_mutex_lock(&d->lock);
    for (int64_t now = mono_ms(); now < end && !*stop && !(kick && *kick); now = mono_ms())
        cond_wait_ms(&d->wake, &d->lock, end - now);
    pthread_mutex_unlock(&d->lock);
}

/* The wire's stream of a spool stream. */
static enum proto_stream wire_stream(int stream)
{
    return stream == SPOOL_STDOUT   ? PROTO_STREAM_STDOUT
           : stream == SPOOL_STDERR ? PROTO_STREAM_STDERR
                                    : PROTO_STREAM_SYSTEM;
}

static const char *stream_name(int stream)
{
    return proto_stream_name(wire_stream(stream));
}

/* --- connection state ---------------------------------------------------------------- */

static void daemon_net_ok(struct daemon *d, bool from_heartbeat)
{
    pthread_mutex_lock(&d->lock);
    bool changed = d->net != 1;
    d->net = 1;
    if (changed && !from_heartbeat) {
        d->hb_kick = true;
        pthread_cond_broadcast(&d->wake);
    }
    pthread_mutex_unlock(&d->lock);
    if (changed)
        log_info("op=connect state=connected server=%s", d->st.server_url);
}

static void daemon_net_failed(struct daemon *d, const char *op, int r, const char *detail)
{
    char q[320];
    pthread_mutex_lock(&d->lock);
    bool changed = d->net != 0;
    d->net = 0;
    pthread_mutex_unlock(&d->lock);
    if (changed)
        log_info("op=connect state=disconnected server=%s error=%s%s", d->st.server_url,
                 r == -EPROTO ? "tls-verification-failed:" : "", log_quote(detail, q, sizeof(q)));
    else
        log_debug("op=%s error=%s", op, log_quote(detail, q, sizeof(q)));
}

static struct transport *daemon_transport(struct daemon *d, int64_t timeout_ms, uint64_t *gen)
{
    struct transport_options o = {.server_url = d->st.server_url,
                                  .ca_file = d->st.ca_file,
                                  .timeout_ms = timeout_ms,
                                  .proxy = d->cfg->proxy,
                                  .no_proxy = d->cfg->no_proxy};
    struct transport *t = NULL;
    pthread_mutex_lock(&d->lock);
    o.credential = d->st.credential;
    *gen = d->cred_gen;
    int r = transport_new(&o, &t);
    pthread_mutex_unlock(&d->lock);
    if (r < 0) {
        log_error("op=transport error=%s", strerror(-r));
        return NULL;
    }
    return t;
}

/* Before a request: take up the credential another thread rotated to since *gen. */
static void daemon_transport_sync(struct daemon *d, struct transport *t, uint64_t *gen)
{
    pthread_mutex_lock(&d->lock);
    if (*gen != d->cred_gen) {
        if (transport_set_credential(t, d->st.credential) < 0)
            log_error("op=rotate-credential error=\"out of memory\"");
        else
            *gen = d->cred_gen;
    }
    pthread_mutex_unlock(&d->lock);
}

/* Rotate the credential (the heartbeat found it expires soon). The new one is saved to
 * agent.json before any thread uses it; when that fails, the old one stays in use (the
 * server accepts it for 15 minutes after the rotation, and a rotation made with it keeps
 * it that long again). Returns true when the next heartbeat should try again: the answer
 * was lost or the new credential could not be saved; false after a rotation or a refusal
 * (tried again an hour later). */
static bool daemon_rotate(struct daemon *d, struct transport *t)
{
    char q[320];
    struct transport_reply rep = {0};
    int r = transport_request(t, "POST", PROTO_AGENT_PATH_ROTATE, NULL, &rep);
    if (r < 0) {
        daemon_net_failed(d, "rotate-credential", r, rep.error);
        return true;
    }
    struct proto_agent_created ac;
    struct jsonv_error je = {.detail = "no credential in the answer"};
    if (rep.status != 200 || proto_agent_created_decode(rep.body, &ac, &je) < 0) {
        log_warn("op=rotate-credential status=%ld field=%s detail=%s", rep.status,
                 rep.status == 200 ? je.field : "",
                 log_quote(rep.status == 200 ? je.detail : rep.error, q, sizeof(q)));
        json_decref(rep.body);
        return rep.status >= 500;
    }
    char *copy = strdup(ac.credential);
    json_decref(rep.body); /* holds the secret: gone once copied */
    if (!copy) {
        log_error("op=rotate-credential error=\"out of memory\"");
        return true;
    }
    /* Only this thread writes st.credential, so reading the rest without the lock is safe. */
    struct agent_state next = d->st;
    next.credential = copy;
    r = agent_state_save(d->state_dir, &next);
    if (r < 0) {
        log_error("op=rotate-credential error=%s detail=\"cannot save the new credential; "
                  "keeping the old one\"",
                  log_quote(strerror(-r), q, sizeof(q)));
        explicit_bzero(copy, strlen(copy));
        free(copy);
        return true;
    }
    pthread_mutex_lock(&d->lock);
    char *old = d->st.credential;
    d->st.credential = copy;
    d->cred_gen++;
    pthread_mutex_unlock(&d->lock);
    if (old) {
        explicit_bzero(old, strlen(old));
        free(old);
    }
    log_info("op=rotate-credential state=rotated");
    return false;
}

/* --- slots --------------------------------------------------------------------------- */

/* Lock held. A DONE slot whose `started` is still unsent stays taken, so that report is
 * not lost when the slot is reused. */
static size_t daemon_free_slots(struct daemon *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nslots; i++)
        if (d->slots[i].state == SLOT_FREE ||
            (d->slots[i].state == SLOT_DONE && !d->slots[i].need_started))
            n++;
    return n;
}

/* Lock held. The RUNNING or DONE slot of an attempt, or NULL. */
static struct slot *daemon_find(struct daemon *d, const char *job_id, int64_t epoch)
{
    for (size_t i = 0; i < d->nslots; i++) {
        struct slot *s = &d->slots[i];
        if (s->state != SLOT_FREE && s->epoch == epoch && strcasecmp(s->job_id, job_id) == 0)
            return s;
    }
    return NULL;
}

/* Something to report. urgent: a `started` or a result, which does not wait for a held
 * exchange to end; output does (at most LINK_BUSY_WAIT_S). */
static void daemon_kick_link_locked(struct daemon *d, bool urgent)
{
    d->send_pending = true;
    if (urgent) {
        d->urgent = true;
        if (d->link)
            transport_wakeup(d->link);
    }
    pthread_cond_signal(&d->send_wake);
}

static void daemon_kick_link(struct daemon *d, bool urgent)
{
    pthread_mutex_lock(&d->lock);
    daemon_kick_link_locked(d, urgent);
    pthread_mutex_unlock(&d->lock);
}

/* How long before the server's lease expiry the agent gives a job up: enough to kill its
 * tree (FENCE_KILL_MS at worst) and for the timer and the server's renewal flush to be
 * late, a quarter of the lease when that is more. */
static int64_t fence_margin_ms(int64_t lease_ms)
{
    return lease_ms / 4 > FENCE_MARGIN_MIN_MS ? lease_ms / 4 : FENCE_MARGIN_MIN_MS;
}

/* Kill the tree of the attempt now (SIGKILL, no grace: it may already run elsewhere) and
 * wait for it to be gone, at most wait_ms (0: signal it and return at once). The slot's
 * worker sees its cancel flag and its main process gone, and finishes as usual. Returns
 * what exec_tree_kill() does. */
static int daemon_kill_tree(struct daemon *d, const char *job_id, int64_t epoch, int64_t wait_ms)
{
    struct exec_tree tree = {0};
    char cgroup[PATH_MAX] = "";
    pthread_mutex_lock(&d->lock);
    struct slot *s = daemon_find(d, job_id, epoch);
    if (s) {
        atomic_store(&s->cancel, true);
        tree = s->tree;
        if (s->tree_cgroup)
            snprintf(cgroup, sizeof(cgroup), "%s", s->tree_cgroup);
    }
    pthread_mutex_unlock(&d->lock);
    tree.cgroup = cgroup[0] ? cgroup : NULL;
    /* The attempt's tags too: a process that left the group still carries them. */
    char tag_id[ID_STR_LEN + 16], tag_epoch[48];
    snprintf(tag_id, sizeof(tag_id), "ORCH_JOB_ID=%s", job_id);
    snprintf(tag_epoch, sizeof(tag_epoch), "ORCH_JOB_EPOCH=%" PRId64, epoch);
    const char *tags[] = {tag_id, tag_epoch, NULL};
    int r = exec_tree_kill(&tree, tags, wait_ms);
    if (r == -ETIMEDOUT && wait_ms > 0)
        log_error("op=kill job=%s epoch=%" PRId64
                  " error=\"processes survive SIGKILL after %" PRId64 " ms\"",
                  job_id, epoch, wait_ms);
    return r;
}

/* The server does not want this attempt any more (409 stale epoch, 404, lost, or a report
 * it cannot accept): stop it at once if it runs (the server may run it elsewhere already)
 * and drop what it spooled. */
static void daemon_drop(struct daemon *d, const char *job_id, int64_t epoch, const char *why)
{
    pthread_mutex_lock(&d->lock);
    struct slot *s = daemon_find(d, job_id, epoch);
    bool running = s && s->state == SLOT_RUNNING;
    if (s) {
        s->need_started = false;
        if (running) {
            s->lost = true;
            atomic_store(&s->cancel, true);
        }
    }
    pthread_mutex_unlock(&d->lock);
    log_info("op=drop job=%s epoch=%" PRId64 " reason=%s%s", job_id, epoch, why,
             running ? " action=stop" : "");
    if (running)
        daemon_kill_tree(d, job_id, epoch, FENCE_KILL_MS);
    int r = spool_discard(d->spool, job_id, epoch);
    if (r < 0 && r != -ENOENT)
        log_warn("op=spool-discard job=%s epoch=%" PRId64 " error=%s", job_id, epoch, strerror(-r));
}

/* --- jobs ---------------------------------------------------------------------------- */

static int daemon_on_output(void *arg, int stream, const char *data, size_t len)
{
    struct slot *s = arg;
    if (stream == 1 || stream == 2)
        s->output_bytes[stream - 1] += (int64_t)len;
    int r = spool_append(s->d->spool, s->job_id, s->epoch, stream, data, len, NULL);
    if (r < 0) {
        if (r != -ENOENT) /* ENOENT: dropped, the job is being stopped anyway */
            log_warn("op=spool-append job=%s epoch=%" PRId64 " error=%s", s->job_id, s->epoch,
                     strerror(-r));
        return r;
    }
    daemon_kick_link(s->d, false);
    return 0;
}

static void daemon_on_started(void *arg, int pid)
{
    struct slot *s = arg;
    log_info("op=job-start job=%s epoch=%" PRId64 " pid=%d", s->job_id, s->epoch, pid);
}

/* Where the job's processes are, durably in the spool before the job goes on: an agent
 * killed now leaves the record its successor ends the tree with (daemon_recover). */
static void daemon_on_tree(void *arg, const struct exec_tree *t)
{
    struct slot *s = arg;
    /* Also in the slot, for daemon_kill_tree(). */
    char *cg = t->cgroup ? strdup(t->cgroup) : NULL;
    pthread_mutex_lock(&s->d->lock);
    free(s->tree_cgroup);
    s->tree_cgroup = cg;
    s->tree = *t;
    s->tree.cgroup = NULL;
    bool given_up = s->lapsed || s->lost;
    pthread_mutex_unlock(&s->d->lock);
    /* Given up while it was being started, after daemon_kill_tree() looked: not a moment
     * of it may run (the grace of a cancel is for jobs still ours). */
    if (given_up)
        daemon_kill_tree(s->d, s->job_id, s->epoch, FENCE_KILL_MS);
    json_t *doc = json_pack("{s:i, s:I, s:s, s:b}", "pgid", t->pgid, "start",
                            (json_int_t)t->start_ticks, "boot_id", t->boot_id, "pid_ns", t->pid_ns);
    if (doc && t->cgroup)
        json_object_set_new(doc, "cgroup", json_string(t->cgroup));
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    int r = text ? spool_set_proc(s->d->spool, s->job_id, s->epoch, text) : -ENOMEM;
    free(text);
    if (r < 0 && r != -ENOENT)
        log_warn("op=spool-proc job=%s epoch=%" PRId64 " error=%s", s->job_id, s->epoch,
                 strerror(-r));
}

/* "K=V" entries of the job: its env, then PATH (a fixed safe one), HOME (its workdir) and
 * LANG when it has none, then ORCH_JOB_* (which the job cannot override). Nothing of the
 * agent's own environment: it may hold what a job must not see. Returns a NULL-terminated
 * malloc'd array of malloc'd strings (free with strv_free), or NULL on ENOMEM. */
static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Free the n entries of v, some of which may be NULL (taken), and v. */
static void strv_free_n(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static char **daemon_job_env(const struct slot *s, const struct proto_assignment *a,
                             const char *workdir)
{
    const json_t *env = a->env;
    size_t n = json_is_object(env) ? json_object_size(env) : 0, ndef = 0;
    char **defaults = host_env_defaults(workdir);
    while (defaults && defaults[ndef])
        ndef++;
    char **v = defaults ? calloc(n + ndef + 5, sizeof(*v)) : NULL;
    if (!v) {
        strv_free_n(defaults, ndef);
        return NULL;
    }
    size_t i = 0;
    const json_t *pv = a->params;
    _cleanup_free_ char *params = json_dumps(pv ? pv : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    if (!params)
        goto fail;
    const char *k;
    json_t *val;
    if (json_is_object(env)) {
        json_object_foreach((json_t *)env, k, val)
        {
            if (!json_is_string(val) || !k[0] || strchr(k, '=') || strncmp(k, "ORCH_JOB_", 9) == 0)
                continue;
            if (asprintf(&v[i], "%s=%s", k, json_string_value(val)) < 0)
                goto fail;
            i++;
        }
    }
    /* The host's defaults (PATH, HOME, ...) for what the job's env does not set. */
    for (size_t j = 0; j < ndef; j++) {
        size_t klen = strcspn(defaults[j], "=");
        bool set = false;
        json_object_foreach((json_t *)env, k, val)
        {
            set |= json_is_string(val) && host_env_name_eq(defaults[j], klen, k);
        }
        if (!set) {
            v[i++] = defaults[j];
            defaults[j] = NULL;
        }
    }
    if (asprintf(&v[i++], "ORCH_JOB_ID=%s", s->job_id) < 0 ||
        asprintf(&v[i++], "ORCH_JOB_EPOCH=%" PRId64, s->epoch) < 0 ||
        asprintf(&v[i++], "ORCH_JOB_PARAMS=%s", params) < 0 ||
        asprintf(&v[i++], "ORCH_JOB_RESULT=%s.result.json", workdir) < 0) {
        v[--i] = NULL; /* asprintf leaves the pointer undefined on failure */
        goto fail;
    }
    strv_free_n(defaults, ndef);
    return v;
fail:
    strv_free(v);
    strv_free_n(defaults, ndef);
    return NULL;
}

/* --- packages ------------------------------------------------------------------------ */

/* A line on the job's stderr, for what the tenant must see (a package that failed). */
ORCH_PRINTF(2, 3) static void daemon_job_note(struct slot *s, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = strlen(line);
    line[len++] = '\n';
    spool_append(s->d->spool, s->job_id, s->epoch, SPOOL_STDERR, line, len, NULL);
    daemon_kick_link(s->d, false);
}

/* The cached archive of the job's package in path, fetched by the link thread (over the
 * agent's one connection) when missing. 0, or < 0 with the reason on the job's stderr. */
static int daemon_package(struct daemon *d, struct slot *s, char *path, size_t len)
{
    const char *id = s->a.package_id;
    const char *sha = s->a.package_sha256;
    if (cache_lookup(d->cache, sha, path, len) == 0) {
        log_info("op=package job=%s package=%s source=cache", s->job_id, id);
        return 0;
    }
    struct fetch f = {.state = FETCH_WAITING};
    snprintf(f.package_id, sizeof(f.package_id), "%s", id);
    snprintf(f.sha256, sizeof(f.sha256), "%s", sha);
    pthread_mutex_lock(&d->lock);
    f.next = d->fetches;
    d->fetches = &f;
    d->send_pending = true;
    d->urgent = true;
    if (d->link)
        transport_wakeup(d->link);
    pthread_cond_signal(&d->send_wake);
    /* A fetch under way is waited for (the link thread holds f); a waiting one is given up
     * when the job is cancelled or the link has stopped. */
    while (f.state == FETCH_BUSY ||
           (f.state == FETCH_WAITING && !atomic_load(&s->cancel) && !d->send_done))
        cond_wait_ms(&d->wake, &d->lock, 500);
    if (f.state == FETCH_WAITING)
        for (struct fetch **p = &d->fetches; *p; p = &(*p)->next)
            if (*p == &f) {
                *p = f.next;
                break;
            }
    int state = f.state;
    pthread_mutex_unlock(&d->lock);
    if (state == FETCH_WAITING) {
        daemon_job_note(s, "orch-agent: stopped while package %s was being fetched", id);
        return -ECANCELED;
    }
    if (state == FETCH_FAILED) {
        daemon_job_note(s, "orch-agent: cannot fetch package %s: %s", id, f.error);
        return -EIO;
    }
    if (cache_lookup(d->cache, sha, path, len) < 0) {
        daemon_job_note(s, "orch-agent: package %s left the cache before it was used", id);
        return -ENOENT;
    }
    return 0;
}

/* Unpack archive into workdir (agent/unpack.c), under the agent's packages.* limits. A
 * refusal goes to the job's stderr and, in *why (malloc'd), to the job's error. */
static int daemon_unpack(struct daemon *d, struct slot *s, const char *archive, const char *workdir,
                         const struct exec_user *user, char **why)
{
    const struct agent_config *cfg = d->cfg;
    struct unpack_limits lim = {.max_bytes = cfg->packages_max_bytes,
                                .max_files = cfg->packages_max_files,
                                .max_depth = cfg->packages_max_depth,
                                .max_path = cfg->packages_max_path,
                                .timeout_ms = UNPACK_TIMEOUT_MS};
    struct unpack_stats st;
    char err[600];
    int64_t t0 = mono_ms();
    int r = unpack_archive(archive, workdir, &lim, user, &s->cancel, &st, err, sizeof(err));
    if (r == -ECANCELED)
        return r;
    if (r < 0) {
        const char *what = r == -EPERM ? "package archive refused" : "cannot unpack package";
        char q[700];
        log_warn("op=package-unpack job=%s package=%s error=%s", s->job_id, s->a.package_id,
                 log_quote(err, q, sizeof(q)));
        daemon_job_note(s, "orch-agent: %s: %s (package %s)", what, err, s->a.package_id);
        if (asprintf(why, "%s: %s", what, err) < 0)
            *why = NULL;
        return r;
    }
    log_info("op=package-unpack job=%s package=%s files=%" PRId64 " bytes=%" PRId64 " ms=%" PRId64,
             s->job_id, s->a.package_id, st.files, st.bytes, mono_ms() - t0);
    return 0;
}

/* The result a package failure spools in place of the job's JSON (the job never ran): the
 * reason, which daemon_result_report() sends as the result's error. */
#define PACKAGE_ERROR_KEY "package_error"

static char *daemon_package_error_json(const char *why)
{
    _cleanup_json_ json_t *o = json_pack("{s:s}", PACKAGE_ERROR_KEY, why);
    return o ? json_dumps(o, JSON_COMPACT) : NULL;
}

/* A package fetched in pieces of LINK_FETCH_PIECE bytes appended to the cache's partial
 * download (cache_partial_*()), each a Range request with If-Range: the digest, so that a
 * fetch cut short (a broken connection, an agent restart) goes on from the bytes it has.
 * The end: a short piece, or 416 at the end. A 200 (the server ignored the range) brings
 * the whole archive: the partial download starts again from it. *have: the bytes held. 0,
 * or < 0 with error filled (the partial download stays, for the next try): -EAGAIN when
 * another try may succeed (no connection, a broken one, HTTP 5xx or 429). */
#define LINK_FETCH_PIECE (8u << 20)

static int link_fetch_pieces(struct daemon *d, struct transport *t, const char *url,
                             const char *etag, int64_t *have, char *error, size_t errlen)
{
    const char *sha = etag + 1; /* "\"<sha>\"" */
    char hex[CRYPTO_SHA256_HEX_LEN];
    snprintf(hex, sizeof(hex), "%.64s", sha);
    for (;;) {
        struct buf body = BUF_INIT;
        struct transport_reply rep;
        int r = transport_get_range(t, url, (uint64_t)*have, LINK_FETCH_PIECE, etag, &body, &rep);
        if (r == -EMSGSIZE) { /* a 200 past a piece: the server does not resume */
            snprintf(error, errlen, "the server sent the whole archive, over %u bytes",
                     LINK_FETCH_PIECE);
            cache_partial_drop(d->cache, hex);
            *have = 0;
            return r;
        }
        if (r < 0) { /* no connection, or it broke: worth another try */
            snprintf(error, errlen, "%s", rep.error);
            return -EAGAIN;
        }
        if (rep.status == 416 && *have > 0) /* the range starts at the end: all here */
            return 0;
        if (rep.status != 200 && rep.status != 206) {
            snprintf(error, errlen, "HTTP %ld: %.200s", rep.status, rep.error);
            return rep.status >= 500 || rep.status == 429 ? -EAGAIN : -EIO;
        }
        if (rep.status == 200) { /* the whole archive, whatever we held */
            cache_partial_drop(d->cache, hex);
            *have = 0;
        }
        r = body.len > 0 ? cache_partial_append(d->cache, hex, body.data, body.len) : 0;
        size_t got = body.len;
        buf_free(&body);
        if (r < 0) {
            snprintf(error, errlen, "%s", strerror(-r));
            return r;
        }
        *have += (int64_t)got;
        if (rep.status == 200 || got < LINK_FETCH_PIECE)
            return 0;
    }
}

/* Fetch package_id (archive sha256) into the cache over t unless it is there: FETCH_DONE,
 * or FETCH_FAILED with why in error (elen bytes) and, when transient is not NULL, whether
 * another try may succeed (link_fetch_pieces()'s -EAGAIN). Link thread. */
static int link_download(struct daemon *d, struct transport *t, const char *package_id,
                         const char *sha256, char *error, size_t elen, bool *transient)
{
    int state = FETCH_DONE;
    if (transient)
        *transient = false;
    char path[PATH_MAX];
    if (cache_lookup(d->cache, sha256, path, sizeof(path)) != 0) {
        char url[128], etag[72];
        proto_agent_path(url, sizeof(url), PROTO_AGENT_PATH_PACKAGE, package_id);
        snprintf(etag, sizeof(etag), "\"%s\"", sha256);
        int64_t t0 = mono_ms(), have = cache_partial_size(d->cache, sha256), from = have;
        int r = link_fetch_pieces(d, t, url, etag, &have, error, elen);
        if (r == 0) {
            r = cache_partial_finish(d->cache, sha256);
            if (r < 0)
                snprintf(error, elen, "%s",
                         r == -EBADMSG ? "the bytes received do not match the package's SHA-256"
                                       : strerror(-r));
        }
        if (r < 0) {
            state = FETCH_FAILED;
            if (transient)
                *transient = r == -EAGAIN;
            char q[320];
            log_warn("op=package-fetch package=%s error=%s", package_id,
                     log_quote(error, q, sizeof(q)));
        } else {
            log_info("op=package-fetch package=%s bytes=%" PRId64 " resumed_at=%" PRId64
                     " ms=%" PRId64,
                     package_id, have, from, mono_ms() - t0);
        }
    }
    return state;
}

/* The link thread: fetch the package a job waits for, if any. */
static void link_fetch(struct daemon *d, struct transport *t)
{
    pthread_mutex_lock(&d->lock);
    struct fetch *f = d->fetches;
    if (f) {
        d->fetches = f->next;
        f->next = NULL;
        f->state = FETCH_BUSY;
    }
    pthread_mutex_unlock(&d->lock);
    if (!f)
        return;
    char error[256] = "";
    int state = link_download(d, t, f->package_id, f->sha256, error, sizeof(error), NULL);
    pthread_mutex_lock(&d->lock);
    memcpy(f->error, error, sizeof(f->error));
    f->state = state;
    pthread_cond_broadcast(&d->wake);
    pthread_mutex_unlock(&d->lock);
}

/* The JSON a job left in $ORCH_JOB_RESULT, if any (malloc'd text; NULL when none). A file
 * over SPOOL_RESULT_MAX bytes or that is not JSON is reported on the job's stderr and
 * ignored. The file is removed. */
static char *daemon_job_result(struct slot *s, const char *path)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *text = malloc(SPOOL_RESULT_MAX + 2);
    size_t n = text ? fread(text, 1, SPOOL_RESULT_MAX + 1, f) : 0;
    unlink(path);
    if (!text)
        return NULL;
    json_t *doc = NULL;
    struct jsonv_error e;
    if (n > SPOOL_RESULT_MAX) {
        daemon_job_note(s, "orch-agent: the result in $ORCH_JOB_RESULT is over %d bytes: ignored",
                        SPOOL_RESULT_MAX);
    } else if (n > 0 && jsonv_parse(text, n, JSONV_MAX_DEPTH_DEFAULT, &doc, &e) < 0) {
        daemon_job_note(s, "orch-agent: the result in $ORCH_JOB_RESULT is not JSON (%s): ignored",
                        e.detail);
    } else if (doc) {
        char *compact = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(doc);
        free(text);
        return compact;
    }
    free(text);
    return NULL;
}

/* The job's private workdir (0700) and its $ORCH_JOB_RESULT file (0600, empty), both the
 * job user's (user; NULL: the agent's). The result file is made here, in a directory the
 * job cannot write, so the job can only fill it: it cannot put a link there for the agent
 * to follow. Returns 0 or -errno. */
static int daemon_job_dirs(const struct exec_user *user, const char *workdir,
                           const char *result_path)
{
    if (mkdir(workdir, 0700) < 0)
        return -errno;
    _cleanup_close_ int fd =
        open(result_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    return host_give_to_job(workdir, fd, user);
}

/* Run the job of slot s; fills *exit_code and *flags, and *result with the JSON it left
 * (malloc'd) or NULL. */
static void daemon_job_exec(struct daemon *d, struct slot *s, int *exit_code, uint32_t *flags,
                            char **result)
{
    const struct proto_assignment *a = &s->a;
    _cleanup_free_ char *why = NULL; /* a package refused: the reason */
    char workdir[PATH_MAX];
    snprintf(workdir, sizeof(workdir), "%s/%s.%" PRId64, d->work_dir, s->job_id, s->epoch);
    char result_path[PATH_MAX + 16];
    snprintf(result_path, sizeof(result_path), "%s.result.json", workdir);
    host_rm_rf(workdir);
    unlink(result_path);
    /* Its own uid while it runs when the agent serves several tenants (exec.uid_range):
     * the slots never outnumber the range (daemon_run()), so one is free. */
    struct exec_user own;
    const struct exec_user *user = d->switch_user ? &d->job_user : NULL;
    if (d->uids) {
        int ur = exec_uids_take(d->uids, &own);
        if (ur < 0) {
            log_error("op=job-user job=%s epoch=%" PRId64 " error=%s", s->job_id, s->epoch,
                      strerror(-ur));
            *flags |= PROTO_RES_SETUP_FAILED;
            return;
        }
        user = &own;
        log_debug("op=job-user job=%s epoch=%" PRId64 " uid=%u", s->job_id, s->epoch, own.uid);
    }
    int dr = daemon_job_dirs(user, workdir, result_path);
    if (dr < 0) {
        log_error("op=job-workdir job=%s epoch=%" PRId64 " path=%s error=%s", s->job_id, s->epoch,
                  workdir, strerror(-dr));
        *flags |= PROTO_RES_SETUP_FAILED;
        host_rm_rf(workdir);
        unlink(result_path);
        if (d->uids)
            exec_uids_put(d->uids, own.uid);
        return;
    }
    const json_t *args = a->args;
    size_t nargs = json_array_size(args);
    _cleanup_free_ const char **argv = calloc(nargs + HOST_ARGV_EXTRA, sizeof(*argv));
    _cleanup_free_ const char **args_v = calloc(nargs + 1, sizeof(*args_v));
    char **env = daemon_job_env(s, a, workdir);
    if (!argv || !args_v || !env) {
        *flags |= PROTO_RES_SETUP_FAILED;
        goto out;
    }
    for (size_t i = 0; i < nargs; i++)
        args_v[i] = json_string_value(json_array_get(args, i));
    /* A package job: its archive unpacked into the workdir, its entrypoint run from there
     * (checked safe: a relative path of [A-Za-z0-9_./-], no ..). */
    char command[RELPATH_MAX + 32];
    if (a->package_id) {
        /* The cache keeps its archives from the lookup until the unpack is done. */
        char archive[PATH_MAX];
        cache_hold(d->cache);
        bool ok = daemon_package(d, s, archive, sizeof(archive)) == 0 &&
                  daemon_unpack(d, s, archive, workdir, user, &why) == 0;
        cache_release(d->cache);
        if (!ok) {
            *flags |= atomic_load(&s->cancel) ? PROTO_RES_CANCELLED : PROTO_RES_PACKAGE;
            goto out;
        }
    }
    host_job_argv(argv, a->command, a->package_id ? a->entrypoint : NULL, args_v, nargs, command,
                  sizeof(command));
    char tag_id[ID_STR_LEN + 16], tag_epoch[48], cg_name[ID_STR_LEN + 24];
    snprintf(tag_id, sizeof(tag_id), "ORCH_JOB_ID=%s", s->job_id);
    snprintf(tag_epoch, sizeof(tag_epoch), "ORCH_JOB_EPOCH=%" PRId64, s->epoch);
    /* The attempt: another agent on this host may be running a later one of the job. */
    const char *tags[] = {tag_id, tag_epoch, NULL};
    /* Per attempt: a successor's recovery must never kill a later attempt's cgroup. */
    snprintf(cg_name, sizeof(cg_name), "%s.%" PRId64, s->job_id, s->epoch);
    struct exec_spec spec = {
        .argv = argv,
        .env = (const char *const *)env,
        .workdir = workdir,
        .timeout_ms = a->timeout_ms,
        .grace_ms = JOB_GRACE_MS,
        .cgroup_parent = d->cgroup_parent,
        .job_id = cg_name,
        .user = user,
        .isolate = true,
        .hide_dir = d->work_dir,
        .keep_file = result_path,
        .env_tags = tags,
    };
    struct exec_sink sink = {.arg = s,
                             .on_output = daemon_on_output,
                             .on_started = daemon_on_started,
                             .on_tree = daemon_on_tree};
    struct exec_result er;
    if (atomic_load(&s->cancel)) {
        /* Cancelled, lost or lapsed while its package was prepared: nothing to start. */
        *flags |= PROTO_RES_CANCELLED;
        goto out;
    }
    s->output_bytes[0] = s->output_bytes[1] = 0;
    int r = exec_default_ops()->run(&spec, &sink, &s->cancel, &er);
    if (r < 0) {
        log_error("op=job-start job=%s epoch=%" PRId64 " error=%s", s->job_id, s->epoch,
                  strerror(-r));
        *flags |= PROTO_RES_SETUP_FAILED;
        goto out;
    }
    *exit_code = er.exit_code;
    if (er.exit_code < -1 || er.exit_code > PROTO_EXIT_CODE_MAX) {
        /* Windows: 32 bits (an NTSTATUS such as 0xC0000005 negative as an int), which the
         * wire does not carry: a failure all the same, the whole code in the job's output. */
        daemon_job_note(s, "orch-agent: the job exited with code %d (0x%08X), reported as %d",
                        er.exit_code, (unsigned)er.exit_code, PROTO_EXIT_CODE_MAX);
        *exit_code = PROTO_EXIT_CODE_MAX;
    }
    *flags |= ((uint32_t)er.term_signal & PROTO_RES_SIGNAL_MASK) << PROTO_RES_SIGNAL_SHIFT;
    if (er.timed_out)
        *flags |= PROTO_RES_TIMED_OUT;
    if (er.cancelled)
        *flags |= PROTO_RES_CANCELLED;
    if (er.output_error < 0 && er.output_error != -ENOENT)
        *flags |= PROTO_RES_OUTPUT_LOST;
    log_info("op=job-end job=%s epoch=%" PRId64 " exit_code=%d signal=%d timed_out=%d "
             "cancelled=%d duration_ms=%" PRId64 " stdout_bytes=%" PRId64 " stderr_bytes=%" PRId64,
             s->job_id, s->epoch, er.exit_code, er.term_signal, er.timed_out, er.cancelled,
             er.duration_ms, s->output_bytes[0], s->output_bytes[1]);
out:
    /* A refused package's reason, in place of a result the job never had a chance to leave. */
    *result = why && (*flags & PROTO_RES_PACKAGE) ? daemon_package_error_json(why)
                                                  : daemon_job_result(s, result_path);
    strv_free(env);
    host_rm_rf(workdir);
    unlink(result_path);
    /* run() has ended the job's whole tree: nothing runs under the uid any more. */
    if (d->uids)
        exec_uids_put(d->uids, own.uid);
}

/* Run the job handed to slot s (RUNNING) to its end: spool it, run it, spool its result;
 * then the slot is DONE (FREE when it could not be spooled). Called by the slot's worker. */
static void daemon_job_run(struct slot *s)
{
    struct daemon *d = s->d;
    int exit_code = -1;
    uint32_t flags = 0;
    _cleanup_free_ char *result = NULL;
    /* Whatever this thread logs now is about this job. */
    size_t log_mark = log_ctx_push("job", s->job_id);
    /* Spooled here rather than by the link thread, whose every exchange would wait for
     * the syncs; the slots' syncs overlap. `started` is reported once it is durable. */
    _cleanup_free_ char *meta = json_dumps(s->assignment, JSON_COMPACT);
    if (meta && strlen(meta) > SPOOL_META_MAX)
        FREE_AND_NULL(meta);
    int r = spool_begin(d->spool, s->job_id, s->epoch, meta);
    if (r < 0) {
        log_error("op=spool-begin job=%s epoch=%" PRId64 " error=%s", s->job_id, s->epoch,
                  strerror(-r));
        pthread_mutex_lock(&d->lock);
        json_decref(s->assignment);
        s->assignment = NULL;
        s->a = (struct proto_assignment){0};
        s->need_started = false;
        s->spooling = false;
        s->state = SLOT_FREE;
        pthread_cond_broadcast(&d->wake);
        pthread_mutex_unlock(&d->lock);
        log_ctx_pop(log_mark);
        return;
    }
    pthread_mutex_lock(&d->lock);
    s->spooling = false;
    s->need_started = !s->lost; /* a dropped one has nothing to say */
    daemon_kick_link_locked(d, true);
    pthread_mutex_unlock(&d->lock);
    if (s->bad)
        flags |= PROTO_RES_BAD_ASSIGNMENT;
    else
        daemon_job_exec(d, s, &exit_code, &flags, &result);
    pthread_mutex_lock(&d->lock);
    bool lapsed = s->lapsed;
    pthread_mutex_unlock(&d->lock);
    if (lapsed) {
        /* Given up by daemon_fence(): whatever the job did, it reports a failure (the server
         * runs it again), never a success nor a cancel. */
        exit_code = -1;
        flags = PROTO_RES_LEASE_LAPSED;
        FREE_AND_NULL(result);
    }

    struct spool_result res = {.exit_code = exit_code, .flags = flags, .json = result};
    r = spool_finish(d->spool, s->job_id, s->epoch, &res);
    if (r < 0 && r != -ENOENT)
        log_error("op=spool-finish job=%s epoch=%" PRId64 " error=%s", s->job_id, s->epoch,
                  strerror(-r));
    pthread_mutex_lock(&d->lock);
    bool lost = s->lost;
    pthread_mutex_unlock(&d->lock);
    if (lost) {
        r = spool_discard(d->spool, s->job_id, s->epoch);
        if (r < 0 && r != -ENOENT)
            log_warn("op=spool-discard job=%s epoch=%" PRId64 " error=%s", s->job_id, s->epoch,
                     strerror(-r));
    }
    pthread_mutex_lock(&d->lock);
    json_decref(s->assignment);
    s->assignment = NULL;
    s->a = (struct proto_assignment){0};
    s->state = SLOT_DONE;
    pthread_cond_broadcast(&d->wake);
    daemon_kick_link_locked(d, true);
    pthread_mutex_unlock(&d->lock);
    log_ctx_pop(log_mark);
}

/* A slot's worker: runs the jobs handed to the slot, one at a time, until the daemon stops
 * and none is left. */
static void *daemon_worker_main(void *arg)
{
    struct slot *s = arg;
    struct daemon *d = s->d;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        while (!s->go && !d->stopping)
            pthread_cond_wait(&s->go_cond, &d->lock);
        if (!s->go)
            break;
        s->go = false;
        pthread_mutex_unlock(&d->lock);
        daemon_job_run(s);
        pthread_mutex_lock(&d->lock);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* Take one assignment: hand it to a free slot's worker (which spools it). Called by the link
 * thread.
 * sent_ms: when the exchange that carried it was sent (its lease counts from then). */
static void daemon_take(struct daemon *d, json_t *a, int64_t sent_ms)
{
    struct proto_assignment pa;
    struct jsonv_error e;
    bool bad = proto_assignment_decode(a, &pa, &e) < 0;
    const char *job_id = pa.job_id;
    int64_t epoch = pa.epoch;
    if (epoch < 1) {
        log_warn("op=assignment error=\"no valid job_id and epoch: ignored\"");
        return;
    }
    char why[512], q[600];
    if (bad) {
        snprintf(why, sizeof(why), "%s %s", e.field, e.detail);
        log_warn("op=assignment job=%s epoch=%" PRId64 " error=%s", job_id, epoch,
                 log_quote(why, q, sizeof(q)));
    }

    pthread_mutex_lock(&d->lock);
    struct slot *s = NULL;
    bool stopping = d->stopping;
    if (stopping || daemon_find(d, job_id, epoch)) {
        pthread_mutex_unlock(&d->lock);
        log_info("op=assignment job=%s epoch=%" PRId64 " action=ignored reason=%s", job_id, epoch,
                 stopping ? "stopping" : "already-running");
        return;
    }
    for (size_t i = 0; i < d->nslots && !s; i++) {
        struct slot *c = &d->slots[i];
        if (c->state == SLOT_FREE || (c->state == SLOT_DONE && !c->need_started))
            s = c;
    }
    if (!s) {
        pthread_mutex_unlock(&d->lock);
        bool queued = false, seen = false;
        size_t i;
        json_t *p;
        json_array_foreach(d->pending, i, p)
        {
            struct proto_assignment other;
            proto_assignment_decode(json_object_get(p, "assignment"), &other, NULL);
            seen = seen || (strcmp(other.job_id, job_id) == 0 && other.epoch == epoch);
        }
        /* With when its exchange was sent: its lease runs meanwhile. */
        if (!seen && json_array_size(d->pending) < d->nslots)
            queued =
                json_array_append_new(d->pending, json_pack("{s:O, s:I}", "assignment", a,
                                                            "sent_ms", (json_int_t)sent_ms)) == 0;
        if (queued || seen)
            log_info("op=assignment job=%s epoch=%" PRId64 " action=queued reason=slot-finishing",
                     job_id, epoch);
        else
            log_warn("op=assignment job=%s epoch=%" PRId64 " action=ignored reason=no-free-slot",
                     job_id, epoch);
        return;
    }
    s->state = SLOT_RUNNING;
    snprintf(s->job_id, sizeof(s->job_id), "%s", job_id); /* lower case: the decoder's */
    s->epoch = epoch;
    atomic_store(&s->cancel, false);
    s->lost = false;
    s->bad = bad;
    s->need_started = false;
    s->spooling = true;
    s->assignment = json_incref(a);
    s->a = pa;
    s->d = d;
    s->renewed_ms = sent_ms;
    s->lapsed = false;
    s->tree = (struct exec_tree){0};
    FREE_AND_NULL(s->tree_cgroup);
    s->go = true;
    bool have_thread = s->thread_valid;
    if (have_thread)
        pthread_cond_signal(&s->go_cond);
    pthread_mutex_unlock(&d->lock);
    log_info("op=assignment job=%s epoch=%" PRId64, s->job_id, epoch);
    if (have_thread)
        return;
    int r = pthread_create(&s->thread, NULL, daemon_worker_main, s);
    if (r == 0) {
        pthread_mutex_lock(&d->lock);
        s->thread_valid = true;
        pthread_cond_broadcast(&d->wake);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    log_error("op=job-thread job=%s epoch=%" PRId64 " error=%s", s->job_id, epoch, strerror(r));
    _cleanup_free_ char *meta = json_dumps(a, JSON_COMPACT);
    if (meta && strlen(meta) > SPOOL_META_MAX)
        FREE_AND_NULL(meta);
    if (spool_begin(d->spool, s->job_id, epoch, meta) == 0) {
        struct spool_result res = {.exit_code = -1, .flags = PROTO_RES_SETUP_FAILED};
        spool_finish(d->spool, s->job_id, epoch, &res);
        daemon_kick_link(d, true);
    }
    pthread_mutex_lock(&d->lock);
    s->go = false;
    json_decref(s->assignment);
    s->assignment = NULL;
    s->a = (struct proto_assignment){0};
    s->need_started = false;
    s->spooling = false;
    s->state = SLOT_FREE;
    pthread_cond_broadcast(&d->wake);
    pthread_mutex_unlock(&d->lock);
}

/* The attempts this agent holds (at most PROTO_RUNNING_MAX; NULL when none or out of
 * memory): those of its running slots (a job being spooled or run; a finished slot's is
 * in the spool until its result is delivered, and after that the server would call it
 * `lost`) and those the spool holds (finished ones whose result is not yet delivered, also
 * from before a restart). A heartbeat lists them (their lease must hold until the result is
 * delivered; after a restart the server answers `lost` for those that are no longer ours), and an
 * exchange asking for assignments with `resume` too: the server does not hand them out
 * again, which would rewrite each one's row for an assignment this agent ignores. */
static struct proto_job_ref *daemon_held(struct daemon *d, size_t *n)
{
    struct spool_attempt *list = NULL;
    size_t total = 0;
    *n = 0;
    if (spool_list(d->spool, &list, &total) < 0)
        total = 0;
    size_t cap = total + d->nslots, k = 0;
    struct proto_job_ref *refs = cap ? calloc(cap, sizeof(*refs)) : NULL;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; refs && i < d->nslots; i++) {
        const struct slot *s = &d->slots[i];
        if (s->state != SLOT_RUNNING)
            continue;
        memcpy(refs[k].job_id, s->job_id, sizeof(refs[k].job_id));
        refs[k++].epoch = s->epoch;
    }
    pthread_mutex_unlock(&d->lock);
    size_t from_slots = k;
    for (size_t i = 0; refs && i < total; i++) {
        bool dup = false;
        for (size_t j = 0; j < from_slots && !dup; j++)
            dup = refs[j].epoch == list[i].epoch && strcasecmp(refs[j].job_id, list[i].job_id) == 0;
        if (dup)
            continue;
        memcpy(refs[k].job_id, list[i].job_id, sizeof(refs[k].job_id));
        refs[k++].epoch = list[i].epoch;
    }
    spool_attempts_free(list, total);
    if (k == 0)
        FREE_AND_NULL(refs);
    *n = k < PROTO_RUNNING_MAX ? k : PROTO_RUNNING_MAX;
    return refs;
}

static json_t *daemon_heartbeat_body(struct daemon *d, struct facts_cpu *prev)
{
    struct proto_heartbeat hb = {.slots = (int64_t)d->nslots, .has_load = true};
    _cleanup_free_ struct proto_job_ref *running = daemon_held(d, &hb.nrunning);
    hb.running = running;
    pthread_mutex_lock(&d->lock);
    size_t free_slots = daemon_free_slots(d);
    hb.status = d->stopping ? "draining" : free_slots == 0 ? "busy" : "idle";
    pthread_mutex_unlock(&d->lock);
    hb.free_slots = (int64_t)free_slots;

    facts_load(d->state_dir, prev, &hb.load);
    hb.spool_bytes = spool_bytes(d->spool);
    return proto_heartbeat_encode(&hb);
}

/* Stop the attempts an answer lists: cancelled through the API, or lost (no longer ours). */
static void daemon_stop_listed(struct daemon *d, const struct proto_job_ref *list, size_t n,
                               bool lost)
{
    for (size_t i = 0; i < n; i++) {
        const char *job_id = list[i].job_id;
        int64_t epoch = list[i].epoch;
        if (lost) {
            daemon_drop(d, job_id, epoch, "lost");
            continue;
        }
        pthread_mutex_lock(&d->lock);
        struct slot *s = daemon_find(d, job_id, epoch);
        bool running = s && s->state == SLOT_RUNNING && !atomic_load(&s->cancel);
        if (running)
            atomic_store(&s->cancel, true);
        pthread_mutex_unlock(&d->lock);
        if (running)
            log_info("op=cancel job=%s epoch=%" PRId64, job_id, epoch);
    }
}

/* A spooled result as its report. */
static json_t *daemon_result_report(const struct spool_item *it)
{
    struct proto_result res;
    proto_result_from_flags(it->flags, it->exit_code, &res);
    _cleanup_json_ json_t *doc = NULL;
    if (it->data && it->len > 0)
        doc = json_loadb(it->data, it->len, JSON_DECODE_ANY, NULL);
    res.result = doc;
    /* A package failure's reason (daemon_package_error_json()), in place of the static
     * sentence: the job never ran, so it left no result. */
    const char *why = (it->flags & PROTO_RES_PACKAGE)
                          ? json_string_value(json_object_get(doc, PACKAGE_ERROR_KEY))
                          : NULL;
    char error[PROTO_ERROR_MAX];
    if (why) {
        snprintf(error, sizeof(error), "the agent could not run the package: %s", why);
        res.error = error;
        res.result = NULL;
    }
    return proto_result_encode(it->job_id, it->epoch, &res);
}

/* Lock held. Whether a slot's worker is spooling an assignment (its `started` follows). */
static bool daemon_starting(struct daemon *d)
{
    for (size_t i = 0; i < d->nslots; i++)
        if (d->slots[i].state == SLOT_RUNNING && d->slots[i].spooling)
            return true;
    return false;
}

static bool daemon_jobs_running(struct daemon *d)
{
    for (size_t i = 0; i < d->nslots; i++)
        if (d->slots[i].state == SLOT_RUNNING)
            return true;
    return false;
}

/* --- the link: one connection, one exchange at a time ---------------------------------- */

/* What one exchange carried: a `started`, or a spool item, in the order of the answers. */
struct sent {
    bool started;
    struct spool_item it; /* !started; it.job_id/epoch also name a started */
};

struct link {
    struct daemon *d;
    struct transport *t;
    uint64_t gen;
    struct facts_cpu cpu;
    int64_t next_hb_ms;
    int64_t last_rotate_ms;
    uint64_t cache_gen_sent; /* the package cache as the server last heard of it */
    bool facts_sent;         /* the host's facts went with an accepted heartbeat */
    bool holding;            /* the exchange in flight may be given up for something urgent */
    int64_t retry_after_ms;  /* the server's Retry-After on its last refusal, 0 when none */
    int64_t sent_ms;         /* when the exchange in flight was sent (CLOCK_MONOTONIC) */
    bool protocol_refused;   /* the server said it does not speak this agent's version */
    struct sent *sent;
    size_t nsent;
    /* Deployments (docs/packages.md, "Deploying a version to agents"): the targets handed
     * out ({deployment_id, package_id, sha256, due_ms}), the reports not yet sent, and those
     * riding the heartbeat in flight. Link thread only. */
    json_t *prefetch_todo, *prefetch_done;
    size_t prefetch_nsent; /* the first reports of prefetch_done, in the heartbeat in flight */
};

/* The abort callback of an exchange: give up a held one when there is something urgent
 * to say, any one when the flush time is over. */
static bool link_abort(void *arg)
{
    struct link *l = arg;
    struct daemon *d = l->d;
    pthread_mutex_lock(&d->lock);
    bool give_up = d->sender_stop || (l->holding && (d->urgent || d->stopping || d->hb_kick));
    pthread_mutex_unlock(&d->lock);
    return give_up;
}

static void link_sent_free(struct link *l)
{
    for (size_t i = 0; i < l->nsent; i++)
        if (!l->sent[i].started)
            spool_item_free(&l->sent[i].it);
    l->nsent = 0;
}

static json_t *link_item_report(const struct spool_item *it)
{
    if (it->kind == SPOOL_CHUNK)
        return proto_logs_encode(it->job_id, it->epoch, wire_stream(it->stream), it->offset,
                                 it->data, it->len);
    return daemon_result_report(it);
}

/* Fill reports with what is due: every `started` not yet accepted, then spooled output
 * and results, up to LINK_MAX_REPORTS items and about LINK_MAX_BYTES of data. */
static void link_collect(struct link *l, json_t *reports)
{
    struct daemon *d = l->d;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->nslots && l->nsent < LINK_MAX_REPORTS; i++) {
        struct slot *s = &d->slots[i];
        if (s->state == SLOT_FREE || !s->need_started)
            continue;
        struct sent *e = &l->sent[l->nsent++];
        memset(e, 0, sizeof(*e));
        e->started = true;
        memcpy(e->it.job_id, s->job_id, sizeof(e->it.job_id));
        e->it.epoch = s->epoch;
        json_array_append_new(reports, proto_started_encode(s->job_id, s->epoch));
    }
    pthread_mutex_unlock(&d->lock);
    size_t bytes = 0;
    while (l->nsent < LINK_MAX_REPORTS && bytes < LINK_MAX_BYTES) {
        struct sent *e = &l->sent[l->nsent];
        memset(e, 0, sizeof(*e));
        int r = spool_next(d->spool, &e->it);
        if (r < 0) {
            if (r != -ENOENT)
                log_error("op=spool-next error=%s", strerror(-r));
            break;
        }
        json_t *rep = link_item_report(&e->it);
        if (!rep) {
            log_error("op=report job=%s error=\"out of memory\"", e->it.job_id);
            spool_item_free(&e->it);
            spool_rewind(d->spool);
            break;
        }
        json_array_append_new(reports, rep);
        bytes += e->it.len + 256;
        l->nsent++;
    }
}

/* A report's answer in a batch: {"code": 200, ...} or {"code": N, "problem": {...}}.
 * Returns false when the report is to be sent again (the server had trouble). */
static bool link_answer(struct link *l, const struct sent *e, const json_t *ans)
{
    struct daemon *d = l->d;
    char q[320];
    struct proto_report_answer ra;
    proto_report_answer_decode(ans, &ra);
    long code = ra.code;
    const char *job_id = e->it.job_id;
    int64_t epoch = e->it.epoch;
    const char *what = e->started                  ? "report-started"
                       : e->it.kind == SPOOL_CHUNK ? "report-logs"
                                                   : "report-result";
    if (code == 200) {
        int r = 0;
        if (e->started) {
            pthread_mutex_lock(&d->lock);
            struct slot *s = daemon_find(d, job_id, epoch);
            if (s) {
                s->need_started = false;
                /* The server renewed its lease when it took the report, after we sent it. */
                if (s->renewed_ms < l->sent_ms)
                    s->renewed_ms = l->sent_ms;
            }
            pthread_cond_broadcast(&d->wake); /* a DONE slot may be free now */
            pthread_mutex_unlock(&d->lock);
            log_info("op=report kind=started job=%s epoch=%" PRId64, job_id, epoch);
        } else if (e->it.kind == SPOOL_CHUNK) {
            r = spool_ack_chunk(d->spool, job_id, epoch, e->it.stream,
                                e->it.offset + (int64_t)e->it.len);
        } else {
            r = spool_ack_result(d->spool, job_id, epoch);
            log_info("op=report kind=result job=%s epoch=%" PRId64 " exit_code=%d", job_id, epoch,
                     e->it.exit_code);
        }
        if (r < 0 && r != -ENOENT)
            log_warn("op=spool-ack job=%s epoch=%" PRId64 " error=%s", job_id, epoch, strerror(-r));
        return true;
    }
    const char *detail = ra.detail ? ra.detail : "no answer for this report";
    /* What the refusal is about: stale-epoch, offset-gap, offset-conflict, ... */
    const char *reason = ra.reason;
    int64_t next = ra.problem_next_offset;
    if (code == 409 && !e->started && e->it.kind == SPOOL_CHUNK && reason &&
        (!strcmp(reason, "offset-gap") || !strcmp(reason, "offset-conflict")) &&
        next >= e->it.offset + (int64_t)e->it.len) {
        /* The server's stream already covers this chunk's bytes (a retransmission after it
         * stored other bytes there): resync past it rather than give the job up. */
        int r = spool_ack_chunk(d->spool, job_id, epoch, e->it.stream,
                                e->it.offset + (int64_t)e->it.len);
        log_warn("op=%s job=%s epoch=%" PRId64 " stream=%s offset=%" PRId64 " status=409 "
                 "reason=%s next_offset=%" PRId64 " action=resync%s",
                 what, job_id, epoch, stream_name(e->it.stream), e->it.offset, reason, next,
                 r < 0 && r != -ENOENT ? " error=spool-ack" : "");
        return true;
    }
    if (code == 409 || code == 404) {
        /* A log chunk the server cannot place (a gap before it, or other bytes stored inside
         * it) cannot be sent again differently: the spool's chunk bounds are fixed. */
        if (reason && strncmp(reason, "offset-", 7) == 0)
            log_error("op=%s job=%s epoch=%" PRId64 " stream=%s offset=%" PRId64 " status=409 "
                      "reason=%s next_offset=%" PRId64 " detail=%s action=drop",
                      what, job_id, epoch, stream_name(e->it.stream), e->it.offset, reason, next,
                      log_quote(detail, q, sizeof(q)));
        daemon_drop(d, job_id, epoch, code == 404 ? "unknown-job" : reason ? reason : "conflict");
        return true;
    }
    if (code == 0 || code >= 500 || code == 429 || code == 408) {
        log_warn("op=%s job=%s epoch=%" PRId64 " status=%ld detail=%s", what, job_id, epoch, code,
                 log_quote(detail, q, sizeof(q)));
        return false;
    }
    /* Any other refusal would refuse the same bytes forever: drop them, loudly. */
    log_error("op=%s job=%s epoch=%" PRId64 " status=%ld detail=%s action=drop", what, job_id,
              epoch, code, log_quote(detail, q, sizeof(q)));
    daemon_drop(d, job_id, epoch, reason ? reason : "refused");
    return true;
}

/* The server's lease, from an answer that names it (lease_s, checked by its decoder; 0 when
 * the answer did not name it). */
static void daemon_learn_lease(struct daemon *d, int64_t lease_s)
{
    if (lease_s < 1)
        return;
    pthread_mutex_lock(&d->lock);
    d->lease_ms = lease_s * 1000;
    pthread_mutex_unlock(&d->lock);
}

/* A heartbeat sent at sent_ms was answered: the server renews the lease of every attempt
 * it listed (all those of the running slots, see daemon_heartbeat_body), from when it
 * received it or later. */
static void daemon_renew_all(struct daemon *d, int64_t sent_ms)
{
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->nslots; i++)
        if (d->slots[i].state == SLOT_RUNNING && d->slots[i].renewed_ms < sent_ms)
            d->slots[i].renewed_ms = sent_ms;
    pthread_mutex_unlock(&d->lock);
}

/* The longest the link may go between heartbeats, or hold an exchange: half of what the
 * lease leaves after the fence's margin, so that one lost heartbeat or a held exchange
 * never fences a job by itself. 0 while the lease is not known. */
static int64_t daemon_lease_step_ms(struct daemon *d)
{
    pthread_mutex_lock(&d->lock);
    int64_t lease = d->lease_ms;
    pthread_mutex_unlock(&d->lock);
    if (lease <= 0)
        return 0;
    int64_t step = (lease - fence_margin_ms(lease)) / 2;
    return step > 1000 ? step : 1000;
}

/* --- deployments: packages fetched ahead of any job --------------------------------------- */

static bool prefetch_listed(const json_t *list, const char *dep)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "deployment_id")), dep) == 0)
            return true;
    }
    return false;
}

/* The heartbeat answer's targets (checked by proto_heartbeat_answer_decode()) that are new:
 * one already cached is reported at once; the others wait a random delay of up to their
 * spread_ms, so that many agents handed a target together do not all start together. */
static void link_prefetch_take(struct link *l, const json_t *list)
{
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it)
    {
        const char *dep = json_string_value(json_object_get(it, "deployment_id"));
        const char *pkg = json_string_value(json_object_get(it, "package_id"));
        const char *sha = json_string_value(json_object_get(it, "sha256"));
        if (prefetch_listed(l->prefetch_todo, dep) || prefetch_listed(l->prefetch_done, dep))
            continue;
        char path[PATH_MAX];
        if (cache_lookup(l->d->cache, sha, path, sizeof(path)) == 0) {
            json_array_append_new(l->prefetch_done,
                                  json_pack("{s:s, s:s}", "deployment_id", dep, "state", "cached"));
            log_info("op=prefetch deployment=%s package=%s source=cache", dep, pkg);
            continue;
        }
        int64_t spread = json_integer_value(json_object_get(it, "spread_ms"));
        uint32_t rnd = 0;
        if (crypto_random(&rnd, sizeof(rnd)) < 0)
            rnd = 0;
        int64_t delay = spread > 0 ? (int64_t)(rnd % ((uint32_t)spread + 1)) : 0;
        json_array_append_new(l->prefetch_todo,
                              json_pack("{s:s, s:s, s:s, s:I}", "deployment_id", dep, "package_id",
                                        pkg, "sha256", sha, "due_ms",
                                        (json_int_t)(mono_ms() + delay)));
        log_info("op=prefetch deployment=%s package=%s delay_ms=%" PRId64, dep, pkg, delay);
    }
}

/* A target's fetch that failed for a reason that may pass (orchd restarting, a broken
 * connection, a 5xx) is tried again, PREFETCH_TRIES times at most, after a delay that doubles
 * from PREFETCH_RETRY_MS up to PREFETCH_RETRY_MAX_MS (1 + 2 + 4 + 8 s: an orchd restart or
 * failover is well within it). Meanwhile the target stays `fetching` on the server: each
 * heartbeat keeps it fresh (deployment_agent_step()). */
#define PREFETCH_TRIES        5
#define PREFETCH_RETRY_MS     1000
#define PREFETCH_RETRY_MAX_MS 30000

/* Fetch the first target that is due, through the same download as a job's package, and
 * queue its report for the next heartbeat, which goes at once. */
static void link_prefetch_run(struct link *l)
{
    struct daemon *d = l->d;
    size_t i;
    json_t *e;
    json_array_foreach(l->prefetch_todo, i, e)
    {
        if (json_integer_value(json_object_get(e, "due_ms")) > mono_ms())
            continue;
        const char *dep = json_string_value(json_object_get(e, "deployment_id"));
        char error[256] = "";
        bool transient = false;
        int state = link_download(d, l->t, json_string_value(json_object_get(e, "package_id")),
                                  json_string_value(json_object_get(e, "sha256")), error,
                                  sizeof(error), &transient);
        int tries = (int)json_integer_value(json_object_get(e, "tries")) + 1;
        if (state != FETCH_DONE && transient && tries < PREFETCH_TRIES) {
            int64_t wait = (int64_t)PREFETCH_RETRY_MS << (tries - 1);
            if (wait > PREFETCH_RETRY_MAX_MS)
                wait = PREFETCH_RETRY_MAX_MS;
            json_object_set_new(e, "tries", json_integer(tries));
            json_object_set_new(e, "due_ms", json_integer((json_int_t)(mono_ms() + wait)));
            char q[320];
            log_warn("op=prefetch deployment=%s try=%d retry_ms=%" PRId64 " error=%s", dep, tries,
                     wait, log_quote(error, q, sizeof(q)));
            return;
        }
        json_t *rep = json_pack("{s:s, s:s}", "deployment_id", dep, "state",
                                state == FETCH_DONE ? "cached" : "failed");
        if (rep && state != FETCH_DONE)
            json_object_set_new(rep, "reason", json_string(error[0] ? error : "fetch failed"));
        log_info("op=prefetch deployment=%s state=%s", dep,
                 state == FETCH_DONE ? "cached" : "failed");
        json_array_append_new(l->prefetch_done, rep);
        json_array_remove(l->prefetch_todo, i);
        pthread_mutex_lock(&d->lock);
        d->hb_kick = true;
        pthread_mutex_unlock(&d->lock);
        return;
    }
}

/* Milliseconds until the next target is due (INT64_MAX when none). */
static int64_t link_prefetch_next_ms(const struct link *l)
{
    int64_t next = INT64_MAX, now = mono_ms();
    size_t i;
    json_t *e;
    json_array_foreach(l->prefetch_todo, i, e)
    {
        int64_t due = json_integer_value(json_object_get(e, "due_ms")) - now;
        if (due < next)
            next = due > 0 ? due : 0;
    }
    return next;
}

/* The heartbeat's answer: interval, what to stop, and the credential's age. */
static void link_heartbeat_answer(struct link *l, const struct proto_heartbeat_answer *hb)
{
    struct daemon *d = l->d;
    d->heartbeat_s = hb->heartbeat_interval_s;
    daemon_learn_lease(d, hb->lease_s);
    daemon_renew_all(d, l->sent_ms);
    daemon_stop_listed(d, hb->cancel, hb->ncancel, false);
    daemon_stop_listed(d, hb->lost, hb->nlost, true);
    if (hb->credential_expires_in_s >= 0 && hb->credential_expires_in_s < d->rotate_before_s &&
        mono_ms() - l->last_rotate_ms >= ROTATE_MIN_GAP_MS) {
        l->last_rotate_ms = mono_ms();
        if (daemon_rotate(d, l->t))
            l->last_rotate_ms = INT64_MIN / 2; /* not done: again with the next heartbeat */
        daemon_transport_sync(d, l->t, &l->gen);
    }
}

enum link_next {
    LINK_GO,      /* the next exchange at once */
    LINK_BACKOFF, /* after a backoff: the server could not be reached or had trouble */
    LINK_DONE,    /* stopping, and nothing is left to send */
};

/* One exchange with the server. */
/* Start the queued assignments whose slots have come free. */
static void link_start_pending(struct daemon *d)
{
    while (json_array_size(d->pending) > 0) {
        pthread_mutex_lock(&d->lock);
        size_t free_slots = daemon_free_slots(d);
        pthread_mutex_unlock(&d->lock);
        if (free_slots == 0)
            return;
        json_t *p = json_incref(json_array_get(d->pending, 0));
        json_array_remove(d->pending, 0);
        daemon_take(d, json_object_get(p, "assignment"),
                    (int64_t)json_integer_value(json_object_get(p, "sent_ms")));
        json_decref(p);
    }
}

#define HB_SLACK_MS 500

/* The server answered 400 unsupported-protocol: it does not speak this agent's protocol
 * version. Said once, as an error naming both sides' versions, then the link retries only
 * every PROTOCOL_RETRY_MS (an upgrade is needed; a fast retry would only flood the server).
 * Returns false for any other answer. */
static bool link_protocol_refused(struct link *l, const struct transport_reply *rep)
{
    int versions[8];
    size_t n = 0;
    if (!proto_agent_unsupported_decode(rep->body, versions, ELEMENTSOF(versions), &n))
        return false;
    char list[64] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof(list); i++) {
        int w = snprintf(list + used, sizeof(list) - used, "%s%d", i ? "," : "", versions[i]);
        used = w < 0 ? sizeof(list) : used + (size_t)w;
    }
    if (!l->protocol_refused) {
        char q[320];
        log_error("op=sync error=unsupported-protocol agent_protocol=%d server_protocols=%s "
                  "retry_s=%d detail=%s",
                  PROTO_AGENT_VERSION, list[0] ? list : "unknown", PROTOCOL_RETRY_MS / 1000,
                  log_quote(rep->error, q, sizeof(q)));
        l->protocol_refused = true;
    }
    l->retry_after_ms = PROTOCOL_RETRY_MS;
    return true;
}

/* An answer came in the agent's protocol: say so when it had been refused. */
static void link_protocol_ok(struct link *l)
{
    if (l->protocol_refused)
        log_info("op=sync protocol=%d action=accepted", PROTO_AGENT_VERSION);
    l->protocol_refused = false;
}

/* A 200 answer to a sync exchange (doc, borrowed): the reports' answers, the heartbeat's,
 * cancels and assignments. Returns false when a report is to be sent again. */
static bool link_sync_answer(struct link *l, const json_t *doc, bool hb_due, uint64_t cache_gen)
{
    struct daemon *d = l->d;
    struct proto_sync_answer sa;
    struct jsonv_error e;
    char q[320];
    if (proto_sync_answer_decode(doc, &sa, &e) < 0) {
        /* Nothing in it can be trusted: every report goes again (they are idempotent). */
        log_warn("op=sync error=\"invalid answer\" field=%s detail=%s", e.field,
                 log_quote(e.detail, q, sizeof(q)));
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < l->nsent; i++)
        if (!link_answer(l, &l->sent[i], json_array_get(sa.reports, i)))
            ok = false;
    struct proto_heartbeat_answer ha;
    if (hb_due && sa.heartbeat && proto_heartbeat_answer_decode(sa.heartbeat, &ha, &e) == 0) {
        l->cache_gen_sent = cache_gen;
        l->facts_sent = true;
        link_heartbeat_answer(l, &ha);
        for (size_t k = 0; k < l->prefetch_nsent; k++)
            json_array_remove(l->prefetch_done, 0);
        l->prefetch_nsent = 0;
        link_prefetch_take(l, ha.prefetch);
        proto_heartbeat_answer_clear(&ha);
        int64_t every = d->heartbeat_s * 1000;
        int64_t step = daemon_lease_step_ms(d);
        l->next_hb_ms = mono_ms() + (step > 0 && step < every ? step : every);
    } else if (hb_due && sa.heartbeat) {
        log_warn("op=heartbeat error=\"invalid answer\" field=heartbeat.%s detail=%s", e.field,
                 log_quote(e.detail, q, sizeof(q)));
    }
    daemon_learn_lease(d, sa.lease_s);
    /* Cancelled through the API since the last exchange (also in heartbeat answers). */
    daemon_stop_listed(d, sa.cancel, sa.ncancel, false);
    size_t i;
    json_t *a;
    json_array_foreach(sa.assignments, i, a)
    {
        daemon_take(d, a, l->sent_ms);
    }
    proto_sync_answer_clear(&sa);
    return ok;
}

static enum link_next link_exchange(struct link *l)
{
    struct daemon *d = l->d;
    daemon_transport_sync(d, l->t, &l->gen);
    link_fetch(d, l->t);
    link_prefetch_run(l);
    link_start_pending(d);
    /* The next heartbeat was scheduled with what was known then: before the first answer
     * taught the lease, that is the plain interval, which may be longer than the lease
     * leaves a running job (it would fence itself). Never wait longer than the step. */
    int64_t step = daemon_lease_step_ms(d);
    if (step > 0 && l->next_hb_ms > mono_ms() + step)
        l->next_hb_ms = mono_ms() + step;
    pthread_mutex_lock(&d->lock);
    bool stop = d->sender_stop, stopping = d->stopping;
    /* A held exchange lasts whole seconds and ends about when the heartbeat falls due: one
     * due within HB_SLACK_MS goes now rather than a whole hold late, and a job's lease
     * renewal with it (the fence counts on renewals at most a step apart). Heartbeats are
     * at least a second apart, so this never sends two in a row. */
    bool hb_due = d->hb_kick || mono_ms() + HB_SLACK_MS >= l->next_hb_ms;
    d->hb_kick = false;
    d->send_pending = false;
    d->urgent = false;
    bool running = daemon_jobs_running(d);
    size_t free_slots = daemon_free_slots(d);
    pthread_mutex_unlock(&d->lock);
    size_t queued = json_array_size(d->pending);
    free_slots = free_slots > queued ? free_slots - queued : 0;
    if (stop)
        return LINK_DONE;

    json_t *reports = json_array();
    if (!reports)
        return LINK_BACKOFF;
    link_collect(l, reports);
    bool assign = !stopping && free_slots > 0;
    if (l->nsent == 0 && !hb_due && !stopping) {
        /* A slot's worker spooling an assignment reports `started` within the spool's
         * syncs: wait for it here rather than hold an exchange which that report would give
         * up, closing the connection. Bounded: a heartbeat falling due goes at once. */
        pthread_mutex_lock(&d->lock);
        bool wait = daemon_starting(d) && !d->send_pending && !d->sender_stop && !d->hb_kick;
        if (wait) {
            int64_t left = l->next_hb_ms - HB_SLACK_MS - mono_ms();
            if (left > 0)
                cond_wait_ms(&d->send_wake, &d->lock,
                             left < STARTING_WAIT_MS ? left : STARTING_WAIT_MS);
        }
        pthread_mutex_unlock(&d->lock);
        if (wait) {
            json_decref(reports);
            return LINK_GO;
        }
    }
    if (l->nsent == 0 && !hb_due && stopping) {
        json_decref(reports);
        /* Stopping with nothing to say: wait here for the jobs' last words. */
        pthread_mutex_lock(&d->lock);
        bool done = stopping && !daemon_jobs_running(d) && !d->send_pending;
        int64_t left = l->next_hb_ms - mono_ms();
        if (!done && !d->send_pending && !d->sender_stop && !d->hb_kick && left > 0)
            cond_wait_ms(&d->send_wake, &d->lock, left < IDLE_WAIT_MS ? left : IDLE_WAIT_MS);
        pthread_mutex_unlock(&d->lock);
        if (!done)
            spool_sync_all(d->spool); /* bound what a power loss can take while idle */
        return done ? LINK_DONE : LINK_GO;
    }
    uint64_t cache_gen = l->cache_gen_sent;
    json_t *hb = NULL;
    if (hb_due) {
        hb = daemon_heartbeat_body(d, &l->cpu);
        /* The cached packages, when they changed since the server last heard. */
        if (hb && cache_generation(d->cache) != l->cache_gen_sent)
            json_object_set_new(hb, "packages", cache_list(d->cache, &cache_gen));
        /* Finished deployment targets, until a heartbeat carrying them is answered. */
        l->prefetch_nsent = 0;
        if (hb && json_array_size(l->prefetch_done) > 0) {
            json_t *reps = json_array();
            for (size_t k = 0;
                 reps && k < json_array_size(l->prefetch_done) && k < PROTO_PREFETCH_MAX; k++)
                json_array_append(reps, json_array_get(l->prefetch_done, k));
            l->prefetch_nsent = json_array_size(reps);
            json_object_set_new(hb, "prefetch", reps);
        }
        /* The host's facts, once per start: an upgraded agent or host shows at once. */
        if (hb && !l->facts_sent)
            json_object_set_new(hb, "capabilities", facts_collect());
    }
    /* With nothing else to carry, the exchange is held open for assignments (when a slot
     * is free) and cancels; while jobs run, their output goes out at least every
     * LINK_BUSY_WAIT_S. */
    int64_t wait_s = 0;
    if (l->nsent == 0 && !hb_due) {
        int64_t to_hb = (l->next_hb_ms - mono_ms()) / 1000;
        wait_s = running ? LINK_BUSY_WAIT_S : POLL_WAIT_S;
        if (to_hb < wait_s)
            wait_s = to_hb > 1 ? to_hb : 1;
        /* An assignment's lease counts from when the exchange that carries it was sent. */
        int64_t step_s = daemon_lease_step_ms(d) / 1000;
        if (step_s > 0 && wait_s > step_s)
            wait_s = step_s;
        /* A deployment target falls due: the exchange ends in time for it. */
        int64_t pf = link_prefetch_next_ms(l);
        if (pf != INT64_MAX && wait_s > pf / 1000)
            wait_s = pf / 1000 > 1 ? pf / 1000 : 1;
    }
    /* Always "resume": an assignment the server answered into a connection this agent
     * had given up (a held exchange it closed for something urgent) comes again, and one
     * it already runs or holds is recognised and ignored. Not only after a loss the agent
     * saw: with several nodes, the held exchange it gave up on one node may claim an
     * assignment after its next exchange, on another node, was answered. */
    size_t nheld = 0;
    _cleanup_free_ struct proto_job_ref *held = assign ? daemon_held(d, &nheld) : NULL;
    _cleanup_json_ json_t *req =
        proto_sync_encode(hb, reports, assign, wait_s, assign, held, nheld);
    if (!req) {
        link_sent_free(l);
        spool_rewind(d->spool);
        return LINK_BACKOFF;
    }

    struct transport_reply rep = {0};
    daemon_transport_sync(d, l->t, &l->gen);
    l->holding = wait_s > 0;
    l->sent_ms = mono_ms();
    int r = transport_request_ex(l->t, "POST", PROTO_AGENT_PATH_SYNC, req,
                                 wait_s * 1000 + REQUEST_TIMEOUT_MS, link_abort, l, &rep);
    l->holding = false;
    /* What this exchange's answer makes us log (reports taken, assignments received) carries
     * its id, the req= of the server's lines for the same exchange. */
    size_t log_mark = log_ctx_push("req", rep.request_id);
    enum link_next next = LINK_GO;
    bool again = false;
    if (r == -EINTR) {
        /* Given up for something urgent: the server may have answered into the void. */
        log_debug("op=sync action=give-up reason=urgent");
        again = true;
    } else if (r < 0) {
        daemon_net_failed(d, "sync", r, rep.error);
        again = true;
        next = LINK_BACKOFF;
    } else if (rep.status == 200) {
        daemon_net_ok(d, hb_due);
        link_protocol_ok(l);
        again = !link_sync_answer(l, rep.body, hb_due, cache_gen);
        if (again)
            next = LINK_BACKOFF;
    } else if (link_protocol_refused(l, &rep)) {
        daemon_net_ok(d, hb_due);
        again = true;
        next = LINK_BACKOFF;
    } else {
        char q[320];
        daemon_net_ok(d, hb_due);
        log_warn("op=sync status=%ld retry_after_s=%lld detail=%s", rep.status,
                 (long long)rep.retry_after_s, log_quote(rep.error, q, sizeof(q)));
        l->retry_after_ms =
            rep.retry_after_s > BACKOFF_MAX_MS / 1000 ? BACKOFF_MAX_MS : rep.retry_after_s * 1000;
        again = true;
        next = LINK_BACKOFF;
    }
    json_decref(rep.body);
    link_sent_free(l);
    if (again)
        spool_rewind(d->spool);
    if (r < 0 && r != -EINTR && hb_due)
        l->next_hb_ms = 0; /* heartbeat first when the server is back */
    log_ctx_pop(log_mark);
    return next;
}

static void *daemon_link_main(void *arg)
{
    struct daemon *d = arg;
    struct link l = {.d = d, .last_rotate_ms = INT64_MIN / 2};
    l.prefetch_todo = json_array();
    l.prefetch_done = json_array();
    l.sent = l.prefetch_todo && l.prefetch_done ? calloc(LINK_MAX_REPORTS, sizeof(*l.sent)) : NULL;
    l.t = l.sent ? daemon_transport(d, REQUEST_TIMEOUT_MS, &l.gen) : NULL;
    pthread_mutex_lock(&d->lock);
    d->link = l.t;
    pthread_mutex_unlock(&d->lock);
    struct backoff b = {0};
    facts_cpu_sample(&l.cpu);
    for (; l.t;) {
        enum link_next next = link_exchange(&l);
        if (next == LINK_DONE)
            break;
        if (next == LINK_BACKOFF) {
            pthread_mutex_lock(&d->lock);
            /* at shutdown a dead server is not worth waiting for */
            bool stop = d->stopping && !daemon_jobs_running(d);
            pthread_mutex_unlock(&d->lock);
            if (stop)
                break;
            int64_t ms = backoff_next(&b);
            if (l.protocol_refused)
                ms = PROTOCOL_RETRY_MS;
            else if (l.retry_after_ms > 0)
                ms = backoff_retry_after(l.retry_after_ms, ms);
            l.retry_after_ms = 0;
            daemon_sleep(d, ms, &d->sender_stop, NULL);
        } else {
            backoff_reset(&b);
        }
    }
    pthread_mutex_lock(&d->lock);
    d->link = NULL;
    d->send_done = true;
    pthread_cond_broadcast(&d->wake);
    pthread_mutex_unlock(&d->lock);
    transport_free(l.t);
    free(l.sent);
    json_decref(l.prefetch_todo);
    json_decref(l.prefetch_done);
    return NULL;
}

/* --- self-fencing ---------------------------------------------------------------------- */

/* A job whose lease no answered exchange renewed for lease - fence_margin_ms() is given
 * up: its whole tree is killed (SIGKILL) and its attempt ends as failed with
 * PROTO_RES_LEASE_LAPSED. The server, cut off from us, takes the job back only when the lease
 * it last renewed expires, which it counts from when it received that exchange (the
 * heartbeat's own transaction renews it, before the answer): never earlier than
 * renewed_ms + lease. So the old
 * run is over before the server can hand the job to another agent. Every lapsed job is
 * signalled before any is waited for: one job's slow end does not hold the next one's
 * SIGKILL back. Called by the main thread; returns how long it may wait before the next
 * check (ms). */
static int64_t daemon_fence(struct daemon *d)
{
    struct lapsed {
        char job_id[ID_STR_LEN];
        int64_t epoch, silent, t0;
        int found;
    } *hits = NULL;
    size_t nhits = 0;
    int64_t next = FENCE_CHECK_MS;
    pthread_mutex_lock(&d->lock);
    int64_t lease = d->lease_ms;
    int64_t now = mono_ms();
    for (size_t i = 0; i < d->nslots && lease > 0; i++) {
        struct slot *s = &d->slots[i];
        if (s->state != SLOT_RUNNING || s->lapsed || s->lost)
            continue;
        int64_t left = s->renewed_ms + lease - fence_margin_ms(lease) - now;
        if (left > 0) {
            if (left < next)
                next = left;
            continue;
        }
        if (!hits && !(hits = calloc(d->nslots, sizeof(*hits)))) {
            next = 1; /* no memory for the list: again at once, the slot still unmarked */
            break;
        }
        s->lapsed = true;
        atomic_store(&s->cancel, true);
        memcpy(hits[nhits].job_id, s->job_id, sizeof(hits[nhits].job_id));
        hits[nhits].epoch = s->epoch;
        hits[nhits].silent = now - s->renewed_ms;
        nhits++;
    }
    pthread_mutex_unlock(&d->lock);
    for (size_t i = 0; i < nhits; i++) {
        hits[i].t0 = mono_ms();
        hits[i].found = daemon_kill_tree(d, hits[i].job_id, hits[i].epoch, 0);
    }
    for (size_t i = 0; i < nhits; i++) {
        int r = daemon_kill_tree(d, hits[i].job_id, hits[i].epoch, FENCE_KILL_MS);
        log_warn("op=lease_lapsed job=%s epoch=%" PRId64 " silent_ms=%" PRId64 " lease_ms=%" PRId64
                 " margin_ms=%" PRId64 " action=kill found=%d kill_ms=%" PRId64,
                 hits[i].job_id, hits[i].epoch, hits[i].silent, lease, fence_margin_ms(lease),
                 r < 0 ? r : hits[i].found, mono_ms() - hits[i].t0);
    }
    free(hits);
    /* The kills took time: look again at once for a job that lapsed meanwhile. */
    return nhits || next <= 0 ? 1 : next;
}

/* --- startup and shutdown ------------------------------------------------------------ */

/* End what is left of an attempt the previous agent process was running when it died: its
 * recorded tree (cgroup, or process group when the leader is still the same process), and
 * every process that still carries its ORCH_JOB_ID. Bounded; logged. */
static void daemon_recover_tree(const struct spool_attempt *at)
{
    struct exec_tree tree = {0};
    json_t *doc = at->proc ? json_loads(at->proc, 0, NULL) : NULL;
    if (json_is_object(doc)) {
        json_t *v = json_object_get(doc, "pgid");
        tree.pgid = json_is_integer(v) ? (int)json_integer_value(v) : 0;
        v = json_object_get(doc, "start");
        tree.start_ticks = json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
        snprintf(tree.boot_id, sizeof(tree.boot_id), "%s",
                 json_string_value(json_object_get(doc, "boot_id"))
                     ? json_string_value(json_object_get(doc, "boot_id"))
                     : "");
        tree.cgroup = json_string_value(json_object_get(doc, "cgroup"));
        tree.pid_ns = json_is_true(json_object_get(doc, "pid_ns"));
    }
    /* The attempt, not the job: another agent on this host may run its next attempt. */
    char tag_id[ID_STR_LEN + 16], tag_epoch[48];
    snprintf(tag_id, sizeof(tag_id), "ORCH_JOB_ID=%s", at->job_id);
    snprintf(tag_epoch, sizeof(tag_epoch), "ORCH_JOB_EPOCH=%" PRId64, at->epoch);
    const char *tags[] = {tag_id, tag_epoch, NULL};
    int64_t t0 = mono_ms();
    int r = exec_tree_kill(&tree, tags, RECOVER_KILL_MS);
    if (r == -ETIMEDOUT)
        log_error("op=recover-kill job=%s epoch=%" PRId64 " pgid=%d error=\"processes survive "
                  "SIGKILL after %d ms\"",
                  at->job_id, at->epoch, tree.pgid, RECOVER_KILL_MS);
    else
        log_info("op=recover-kill job=%s epoch=%" PRId64 " pgid=%d cgroup=%s found=%d ms=%" PRId64,
                 at->job_id, at->epoch, tree.pgid, tree.cgroup ? tree.cgroup : "none", r,
                 mono_ms() - t0);
    json_decref(doc);
}

/* Attempts the previous agent process left unfinished are reported as failed, once their
 * processes are gone: the server runs them again as soon as it hears. */
static int daemon_recover(struct daemon *d)
{
    struct spool_attempt *list = NULL;
    size_t n = 0;
    int r = spool_list(d->spool, &list, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        if (list[i].finished)
            continue;
        daemon_recover_tree(&list[i]);
        struct spool_result res = {.exit_code = -1, .flags = PROTO_RES_RESTARTED};
        r = spool_finish(d->spool, list[i].job_id, list[i].epoch, &res);
        log_info("op=recover job=%s epoch=%" PRId64 " result=\"agent restarted\"%s", list[i].job_id,
                 list[i].epoch, r < 0 ? " error=spool-finish" : "");
    }
    spool_attempts_free(list, n);
    return 0;
}

/* Join the link thread if it ends within ms. It sets send_done once it is done with the
 * shared state, just before it frees its own and returns: then the join is prompt. (Not
 * pthread_timedjoin_np(): winpthreads has none.) */
static bool link_join_within(struct daemon *d, pthread_t th, int64_t ms)
{
    int64_t end = mono_ms() + ms;
    pthread_mutex_lock(&d->lock);
    for (int64_t now = mono_ms(); !d->send_done && now < end; now = mono_ms())
        cond_wait_ms(&d->wake, &d->lock, end - now);
    bool done = d->send_done;
    pthread_mutex_unlock(&d->lock);
    if (done)
        pthread_join(th, NULL);
    return done;
}

static void daemon_free(struct daemon *d)
{
    if (!d)
        return;
    spool_close(d->spool);
    cache_close(d->cache);
    json_decref(d->pending);
    for (size_t i = 0; d->slots && i < d->nslots; i++) {
        json_decref(d->slots[i].assignment);
        free(d->slots[i].tree_cgroup);
        pthread_cond_destroy(&d->slots[i].go_cond);
    }
    free(d->slots);
    free(d->work_dir);
    exec_uids_free(d->uids);
    if (d->cgroup_parent)
        rmdir(d->cgroup_parent);
    free(d->cgroup_parent);
    agent_state_free(&d->st);
    pthread_cond_destroy(&d->wake);
    pthread_cond_destroy(&d->send_wake);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static int daemon_opts(int argc, char **argv, const char **state_dir)
{
    static const struct option opts[] = {
        {"state-dir", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c != 'd') {
            fprintf(stderr, "usage: orch-agent run [--state-dir DIR]\n");
            return EXIT_USAGE;
        }
        *state_dir = optarg;
    }
    if (optind < argc) {
        fprintf(stderr, "orch-agent: run: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    return 0;
}

struct probe_out {
    char text[512];
    size_t len;
};

static int probe_output(void *arg, int stream, const char *data, size_t len)
{
    struct probe_out *p = arg;
    (void)stream;
    size_t room = sizeof(p->text) - 1 - p->len;
    memcpy(p->text + p->len, data, len < room ? len : room);
    p->len += len < room ? len : room;
    p->text[p->len] = '\0';
    return 0;
}

/* Run a trivial job the way real ones run, to find out what isolation this host gives and
 * that the job user can reach the work directory; one info line says what is in force. */
static int daemon_probe_exec(struct daemon *d)
{
    const char *argv[HOST_ARGV_EXTRA];
    char buf[RELPATH_MAX + 32];
    host_job_argv(argv, "exit 0", NULL, NULL, 0, buf, sizeof(buf));
    char **env = host_env_defaults(d->work_dir);
    if (!env) {
        fprintf(stderr, "orch-agent: out of memory\n");
        return EXIT_FAIL;
    }
    struct exec_spec spec = {
        .argv = argv,
        .env = (const char *const *)env,
        .workdir = d->work_dir,
        .timeout_ms = 30000,
        .grace_ms = 1000,
        .cgroup_parent = d->cgroup_parent,
        .job_id = "orch-agent-probe",
        .user = d->switch_user ? &d->job_user : NULL,
        .isolate = true,
    };
    struct probe_out out = {.len = 0};
    struct exec_sink sink = {.arg = &out, .on_output = probe_output};
    struct exec_result er;
    int r = exec_default_ops()->run(&spec, &sink, NULL, &er);
    strv_free(env);
    if (r < 0 || !er.started || er.exit_code != 0) {
        fprintf(stderr, "orch-agent: cannot run jobs as '%s' in %s: %s\n", d->job_user_name,
                d->work_dir,
                r < 0     ? strerror(-r)
                : out.len ? out.text
                          : "the probe failed");
        return EXIT_FAIL;
    }
    bool subreaper = exec_subreaper_enable() == 0;
    /* switched: the probe ran under another identity than the agent's (POSIX: the job
     * user; Windows: the restricted token). */
    log_info("op=isolation user=%s switched=%s pid_ns=%s cgroup=%s subreaper=%s "
             "no_new_privs=yes fds=stdio-only workdir=private",
             d->job_user_name, er.user_switched ? "yes" : "no", er.isolated ? "yes" : "no",
             er.in_cgroup ? d->cgroup_parent : "none", subreaper ? "yes" : "no");
    return EXIT_OK;
}

/* Everything before the threads start: state, spool, work dir, recovery. */
static int daemon_setup(struct daemon *d)
{
    char err[512] = "";
    int r = agent_state_load(d->state_dir, &d->st, err, sizeof(err));
    if (r == -ENOENT) {
        fprintf(stderr, "orch-agent: not enrolled (no %s/agent.json): run `orch-agent register`\n",
                d->state_dir);
        return EXIT_NOT_ENROLLED;
    }
    if (r < 0) {
        fprintf(stderr, "orch-agent: %s\n", err[0] ? err : strerror(-r));
        return EXIT_FAIL;
    }
    if (strncmp(d->st.server_url, "https://", 8) != 0) {
        fprintf(stderr, "orch-agent: the stored server URL is not https://\n");
        return EXIT_FAIL;
    }
    /* Several tenants' jobs under one job user could reach each other while they run. */
    if (d->st.pool_id && !d->uids && !d->cfg->exec_allow_root) {
        fprintf(stderr,
                "orch-agent: this agent serves the shared pool %s and runs several tenants' "
                "jobs: set exec.uid_range (e.g. exec.uid_range = 200000-200999, uids no account "
                "uses) so that each job runs under a uid of its own, or exec.allow_root=true to "
                "run them all as one user (unsafe)\n",
                d->st.pool_id);
        return EXIT_FAIL;
    }
    /* Searchable but not listable by the job user (it must reach work/ below, nothing
     * else): agent.json is 0600, spool/ and cache/ 0700. */
    r = host_own_dir(d->state_dir, d->switch_user ? 0711 : 0700);
    if (r < 0) {
        fprintf(stderr, "orch-agent: state directory %s: %s\n", d->state_dir,
                r == -EPERM ? "not owned by the agent's user, or writable by others"
                            : strerror(-r));
        return EXIT_FAIL;
    }
    _cleanup_free_ char *spool_dir = NULL;
    if (asprintf(&spool_dir, "%s/spool", d->state_dir) < 0) {
        spool_dir = NULL;
        return EXIT_FAIL;
    }
    r = spool_open(spool_dir, 0, &d->spool);
    if (r < 0) {
        fprintf(stderr, "orch-agent: cannot open the spool %s: %s\n", spool_dir,
                r == -EBUSY ? "another orch-agent uses this state directory" : strerror(-r));
        return EXIT_FAIL;
    }
    if (asprintf(&d->work_dir, "%s/work", d->state_dir) < 0) {
        d->work_dir = NULL;
        return EXIT_FAIL;
    }
    _cleanup_free_ char *cache_dir = NULL;
    if (asprintf(&cache_dir, "%s/cache", d->state_dir) < 0) {
        cache_dir = NULL;
        return EXIT_FAIL;
    }
    r = cache_open(cache_dir, d->cfg->cache_max_bytes, &d->cache);
    if (r < 0) {
        fprintf(stderr, "orch-agent: cannot open the package cache %s: %s\n", cache_dir,
                strerror(-r));
        return EXIT_FAIL;
    }
    if ((r = host_restrict_dir(spool_dir, 0700)) < 0 ||
        (r = host_restrict_dir(cache_dir, 0700)) < 0) {
        fprintf(stderr, "orch-agent: cannot restrict %s: %s\n", d->state_dir, strerror(-r));
        return EXIT_FAIL;
    }
    d->cgroup_parent = host_cgroup_dir(d->st.agent_id);
    /* Before the work dir is emptied and before anything is reported: a predecessor killed
     * with its jobs running must not have them running while the server runs them again. */
    r = daemon_recover(d);
    if (r < 0) {
        fprintf(stderr, "orch-agent: cannot read the spool: %s\n", strerror(-r));
        return EXIT_FAIL;
    }
    host_rm_rf(d->work_dir); /* what a previous process left behind */
    /* Searchable by the job user, who owns only its own job's 0700 directory inside. */
    if (mkdir(d->work_dir, 0711) < 0 && errno != EEXIST) {
        fprintf(stderr, "orch-agent: cannot create %s: %s\n", d->work_dir, strerror(errno));
        return EXIT_FAIL;
    }
    if ((r = host_restrict_dir(d->work_dir, 0711)) < 0) {
        fprintf(stderr, "orch-agent: cannot restrict %s: %s\n", d->work_dir, strerror(-r));
        return EXIT_FAIL;
    }
    return daemon_probe_exec(d);
}

int daemon_run(int argc, char **argv, const struct agent_config *cfg)
{
    const char *state_dir = cfg->state_dir;
    if (daemon_opts(argc, argv, &state_dir) != 0)
        return EXIT_USAGE;
    log_set_level((enum log_level)cfg->log_level);

    /* Before any thread exists: on POSIX every thread inherits the blocked signals. */
    if (service_stop_init() < 0) {
        fprintf(stderr, "orch-agent: cannot set up the stop signals\n");
        return EXIT_FAIL;
    }

    struct daemon *d = calloc(1, sizeof(*d));
    if (!d) {
        fprintf(stderr, "orch-agent: out of memory\n");
        return EXIT_FAIL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_COND);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->wake, &ca);
    pthread_cond_init(&d->send_wake, &ca);
    pthread_condattr_destroy(&ca);
    d->cfg = cfg;
    d->state_dir = state_dir;
    d->net = -1;
    d->heartbeat_s = HEARTBEAT_DEFAULT_S;
    d->rotate_before_s = ROTATE_BEFORE_S;
    d->pending = json_array();
    const char *rb = getenv("ORCH_AGENT_ROTATE_BEFORE_S");
    if (rb && *rb) {
        char *end = NULL;
        long long v = strtoll(rb, &end, 10);
        if (*end == '\0' && v >= 0)
            d->rotate_before_s = v;
        else
            log_warn("op=start detail=\"ignoring an invalid ORCH_AGENT_ROTATE_BEFORE_S\"");
    }
    struct host_job_identity who;
    int rc = host_job_identity(cfg, &who) < 0 ? EXIT_FAIL : EXIT_OK;
    if (rc == EXIT_OK) {
        d->switch_user = who.switch_user;
        d->job_user = who.user;
        d->uids = who.uids;
        snprintf(d->job_user_name, sizeof(d->job_user_name), "%s", who.name);
    }
    if (rc == EXIT_OK)
        rc = daemon_setup(d);
    if (rc != EXIT_OK) {
        daemon_free(d);
        return rc;
    }
    /* The configuration's slots when set, else those registered. */
    d->nslots = cfg->slots > 0 ? (size_t)cfg->slots : d->st.slots > 0 ? (size_t)d->st.slots : 1;
    if (d->uids && exec_uids_size(d->uids) < d->nslots) {
        fprintf(stderr, "orch-agent: exec.uid_range holds %zu uids, fewer than the %zu slots\n",
                exec_uids_size(d->uids), d->nslots);
        daemon_free(d);
        return EXIT_FAIL;
    }
    d->slots = calloc(d->nslots, sizeof(*d->slots));
    if (!d->slots) {
        daemon_free(d);
        return EXIT_FAIL;
    }
    for (size_t i = 0; i < d->nslots; i++) {
        d->slots[i].d = d;
        pthread_cond_init(&d->slots[i].go_cond, NULL);
    }

    char q[300];
    log_info("op=start agent=%s name=%s server=%s slots=%zu", d->st.agent_id,
             log_quote(d->st.name, q, sizeof(q)), d->st.server_url, d->nslots);

    pthread_t link;
    bool link_ok = pthread_create(&link, NULL, daemon_link_main, d) == 0;
    rc = EXIT_OK;
    if (!link_ok) {
        log_error("op=start error=\"cannot create threads\"");
        rc = EXIT_FAIL;
    } else {
        /* The main thread waits to be told to stop, and fences jobs meanwhile: the link
         * thread may be stuck in an exchange with a server that does not answer. */
        const char *why = NULL;
        while (service_stop_wait(daemon_fence(d), &why) == 0)
            ;
        log_info("op=stop signal=%s", why);
    }

    /* Stop taking jobs, cancel the running ones (they get their grace period). */
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    for (size_t i = 0; i < d->nslots; i++) {
        if (d->slots[i].state == SLOT_RUNNING)
            atomic_store(&d->slots[i].cancel, true);
        pthread_cond_signal(&d->slots[i].go_cond); /* an idle worker exits */
    }
    pthread_cond_broadcast(&d->wake);
    pthread_cond_signal(&d->send_wake);
    if (d->link)
        transport_wakeup(d->link);
    pthread_mutex_unlock(&d->lock);
    /* The link thread takes no slot once stopping is set, so the set of workers is final
     * once the slot it may be filling right now has its thread. A worker runs the job it
     * was handed (cancelled), then exits. */
    for (size_t i = 0; i < d->nslots; i++) {
        struct slot *s = &d->slots[i];
        pthread_mutex_lock(&d->lock);
        while (s->state == SLOT_RUNNING && !s->thread_valid)
            pthread_cond_wait(&d->wake, &d->lock);
        bool joinable = s->thread_valid;
        pthread_mutex_unlock(&d->lock);
        if (joinable) {
            pthread_join(s->thread, NULL);
            pthread_mutex_lock(&d->lock);
            s->state = SLOT_FREE;
            s->thread_valid = false;
            pthread_mutex_unlock(&d->lock);
        }
    }
    /* Let the link flush what the jobs left, for a while. */
    bool all_joined = true;
    if (link_ok) {
        int64_t end = mono_ms() + FLUSH_MS;
        pthread_mutex_lock(&d->lock);
        d->send_pending = true;
        pthread_cond_signal(&d->send_wake);
        for (int64_t now = mono_ms(); !d->send_done && now < end; now = mono_ms())
            cond_wait_ms(&d->wake, &d->lock, end - now);
        d->sender_stop = true;
        pthread_cond_signal(&d->send_wake);
        pthread_cond_broadcast(&d->wake);
        if (d->link)
            transport_wakeup(d->link);
        pthread_mutex_unlock(&d->lock);
        all_joined &= link_join_within(d, link, JOIN_MS);
    }
    if (!all_joined) {
        /* A request is still in flight and did not notice in time (a DNS lookup or a TLS
         * handshake can), and the process is about to exit anyway: leave the shared state
         * to that thread rather than free it under its feet. */
        log_info("op=stop state=stopped detail=\"a request was still in flight\"");
        return rc;
    }
    daemon_free(d);
    log_info("op=stop state=stopped");
    return rc;
}
