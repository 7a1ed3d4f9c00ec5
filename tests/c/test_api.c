/* C tests of include/oci_packer.h: every operation, errors and their fields, NULL and bad
 * UTF-8 arguments, a panic caught at the boundary, progress callbacks from worker threads, a
 * cancel fired from a second thread, login/logout against a registry with htpasswd. Built
 * with -Wall -Wextra -Werror and AddressSanitizer/UBSan by tests/c/run.sh.
 * Usage: test_api WORKDIR REGISTRY_HOST:PORT AUTH_REGISTRY_HOST:PORT USER PASSWORD */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "oci_packer.h"

/* The test hook is not in the public header: it exists only in builds with the test-hooks
 * feature (tests/c/run.sh builds one). */
oci_packer_status oci_packer_test_panic(oci_packer_error **error);

static int failures = 0;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
            failures++;                                                    \
        }                                                                  \
    } while (0)

struct counts {
    pthread_mutex_t lock;
    int started, finished;
    unsigned long long bytes;
};

static void on_progress(const oci_packer_progress *event, void *user_data) {
    struct counts *c = user_data;
    pthread_mutex_lock(&c->lock);
    if (strcmp(event->event, "started") == 0) c->started++;
    if (strcmp(event->event, "finished") == 0) c->finished++;
    if (strcmp(event->event, "advanced") == 0) c->bytes += event->bytes;
    pthread_mutex_unlock(&c->lock);
}

/* A pack stopped from another thread: the progress callback says bytes are flowing, the
 * second thread waits for that (no sleeping) and fires the cancel handle. */
struct cancelling {
    pthread_mutex_t lock;
    pthread_cond_t flowing;
    int seen;
    oci_packer_cancel *cancel;
};

static void on_cancel_progress(const oci_packer_progress *event, void *user_data) {
    struct cancelling *c = user_data;
    if (strcmp(event->event, "stage_advanced") != 0) return;
    pthread_mutex_lock(&c->lock);
    c->seen = 1;
    pthread_cond_signal(&c->flowing);
    pthread_mutex_unlock(&c->lock);
}

static void *fire_when_flowing(void *arg) {
    struct cancelling *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->seen) pthread_cond_wait(&c->flowing, &c->lock);
    pthread_mutex_unlock(&c->lock);
    oci_packer_cancel_fire(c->cancel);
    return NULL;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(2); }
    fputs(text, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: %s WORKDIR REGISTRY AUTH_REGISTRY USER PASSWORD\n", argv[0]); return 2; }
    const char *dir = argv[1], *registry = argv[2], *auth_registry = argv[3];
    const char *user = argv[4], *password = argv[5];
    char path[4096], target[4096], ref[4096];
    char *result = NULL;
    oci_packer_error *err = NULL;
    oci_packer_status st;

    CHECK(strcmp(oci_packer_version(), "0.1.0") == 0, "version %s", oci_packer_version());

    /* NULL arguments and invalid UTF-8: a status and an error object, never a crash. */
    st = oci_packer_pack_file(NULL, "oci://x:v1", NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_NULL_ARGUMENT, "status %u", st);
    CHECK(oci_packer_error_code(err) == OCI_PACKER_STATUS_NULL_ARGUMENT, "code");
    CHECK(strstr(oci_packer_error_message(err), "path is NULL") != NULL, "%s", oci_packer_error_message(err));
    oci_packer_error_free(err);
    err = NULL;
    st = oci_packer_pack_file("pack.yaml", "oci://x:v1", NULL, NULL, NULL);
    CHECK(st == OCI_PACKER_STATUS_NULL_ARGUMENT, "NULL result, NULL error: status %u", st);
    st = oci_packer_validate_file("\xff\xfe.yaml", &result, &err);
    CHECK(st == OCI_PACKER_STATUS_INVALID_UTF8, "status %u", st);
    oci_packer_error_free(err);
    err = NULL;
    CHECK(oci_packer_error_code(NULL) == OCI_PACKER_STATUS_NULL_ARGUMENT, "code of NULL");
    CHECK(oci_packer_error_message(NULL) == NULL, "message of NULL");
    oci_packer_error_free(NULL);
    oci_packer_string_free(NULL);
    oci_packer_options_free(NULL);
    CHECK(oci_packer_options_set_fsync(NULL, true, NULL) == OCI_PACKER_STATUS_NULL_ARGUMENT, "NULL options");

    /* A panic inside the library comes back as a status. */
    st = oci_packer_test_panic(&err);
    CHECK(st == OCI_PACKER_STATUS_PANIC, "status %u", st);
    CHECK(strstr(oci_packer_error_message(err), "panicked") != NULL, "%s", oci_packer_error_message(err));
    oci_packer_error_free(err);
    err = NULL;

    /* Validate a bad pack file: OK, with the problems as JSON. */
    write_file(dir, "a.txt", "alpha\n");
    write_file(dir, "bad.yaml", "items:\n  - from: file://a.txt\n    platform: linux-amd64\n");
    snprintf(path, sizeof path, "%s/bad.yaml", dir);
    st = oci_packer_validate_file(path, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "status %u", st);
    CHECK(result && strstr(result, "\"field\":\"items[0].platform\"") && strstr(result, "\"line\":3"), "%s", result);
    oci_packer_string_free(result);
    result = NULL;

    /* Packing it fails with PACK_FILE and names the problem. */
    snprintf(target, sizeof target, "oci://%s/layout:bad", dir);
    st = oci_packer_pack_file(path, target, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_PACK_FILE, "status %u", st);
    CHECK(strstr(oci_packer_error_message(err), "\"linux-amd64\": expected os/arch"), "%s", oci_packer_error_message(err));
    CHECK(result == NULL, "no result on failure");
    oci_packer_error_free(err);
    err = NULL;

    /* Pack into a layout with options and a progress callback called from worker threads. */
    oci_packer_options *opts = oci_packer_options_new();
    struct counts counts = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    CHECK(oci_packer_options_set_concurrency(opts, 2, NULL) == OCI_PACKER_STATUS_OK, "concurrency");
    CHECK(oci_packer_options_set_concurrency(opts, 0, &err) == OCI_PACKER_STATUS_INVALID_ARGUMENT, "0 refused");
    oci_packer_error_free(err);
    err = NULL;
    CHECK(oci_packer_options_set_tmp_dir(opts, dir, NULL) == OCI_PACKER_STATUS_OK, "tmp dir");
    CHECK(oci_packer_options_set_progress(opts, on_progress, &counts, NULL) == OCI_PACKER_STATUS_OK, "progress");
    write_file(dir, "pack.yaml", "type: application/vnd.example.c\nitems:\n  - from: file://a.txt\n    platform: linux/amd64\n");
    snprintf(path, sizeof path, "%s/pack.yaml", dir);
    snprintf(target, sizeof target, "oci://%s/layout:v1", dir);
    st = oci_packer_pack_file(path, target, opts, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "pack: %s", err ? oci_packer_error_message(err) : "");
    CHECK(result && strstr(result, "\"digest\":\"sha256:") && strstr(result, "image.index"), "%s", result);
    CHECK(counts.started == 4 && counts.finished == 4, "progress started %d finished %d", counts.started, counts.finished);
    oci_packer_string_free(result);
    result = NULL;

    /* verify: the graph is whole. */
    st = oci_packer_verify(target, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && result && strstr(result, "\"problems\":[]"), "verify: %s", result ? result : "");
    oci_packer_string_free(result);
    result = NULL;

    /* extract: files and a pack.yaml; a title leaving the output directory is refused. */
    snprintf(path, sizeof path, "%s/extracted", dir);
    st = oci_packer_extract(target, path, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && result && strstr(result, "\"packFile\"") && strstr(result, "pack.yaml"),
          "extract: %s", result ? result : (err ? oci_packer_error_message(err) : ""));
    oci_packer_string_free(result);
    result = NULL;
    st = oci_packer_extract(target, path, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_INVALID_ARGUMENT && strstr(oci_packer_error_message(err), "not empty"),
          "extract into a non-empty directory: %u", st);
    oci_packer_error_free(err);
    err = NULL;
    oci_packer_options *force = oci_packer_options_new();
    CHECK(oci_packer_options_set_force(force, true, NULL) == OCI_PACKER_STATUS_OK, "force");
    CHECK(oci_packer_options_set_unpack(force, true, NULL) == OCI_PACKER_STATUS_OK, "unpack");
    CHECK(oci_packer_options_set_images(force, false, NULL) == OCI_PACKER_STATUS_OK, "images");
    CHECK(oci_packer_options_set_limits(force, 1 << 20, 1000, NULL) == OCI_PACKER_STATUS_OK, "limits");
    st = oci_packer_extract(target, path, force, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "extract --force: %s", err ? oci_packer_error_message(err) : "");
    oci_packer_string_free(result);
    result = NULL;
    oci_packer_options_free(force);
    write_file(dir, "evil.yaml", "items:\n  - from: file://a.txt\n    annotations: {org.opencontainers.image.title: ../escaped.txt}\n");
    snprintf(path, sizeof path, "%s/evil.yaml", dir);
    snprintf(ref, sizeof ref, "oci://%s/evil:v1", dir);
    st = oci_packer_pack_file(path, ref, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "pack evil: %s", err ? oci_packer_error_message(err) : "");
    oci_packer_string_free(result);
    result = NULL;
    snprintf(path, sizeof path, "%s/evil-out", dir);
    st = oci_packer_extract(ref, path, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_UNSAFE_CONTENT && oci_packer_error_digest(err) != NULL, "unsafe title: %u", st);
    oci_packer_error_free(err);
    err = NULL;
    snprintf(path, sizeof path, "%s/pack.yaml", dir);
    snprintf(target, sizeof target, "oci://%s/layout:v1", dir);

    /* mount / umount: an image of one tar layer made by tar(1). */
    {
        char cmd[8192], mnt[2048], motd[4096];
        write_file(dir, "motd", "from c\n");
        snprintf(cmd, sizeof cmd, "tar -cf %.2000s/layer.tar -C %.2000s motd", dir, dir);
        CHECK(system(cmd) == 0, "tar");
        write_file(dir, "cfg.json", "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
        write_file(dir, "image.yaml", "config: {from: file://cfg.json, type: application/vnd.oci.image.config.v1+json}\nitems:\n  - from: file://layer.tar\n");
        snprintf(path, sizeof path, "%s/image.yaml", dir);
        snprintf(ref, sizeof ref, "oci://%s/images:v1", dir);
        st = oci_packer_pack_file(path, ref, NULL, &result, &err);
        CHECK(st == OCI_PACKER_STATUS_OK, "pack image: %s", err ? oci_packer_error_message(err) : "");
        oci_packer_string_free(result);
        result = NULL;
        snprintf(mnt, sizeof mnt, "%.2000s/mnt", dir);
        st = oci_packer_mount(ref, mnt, "{\"noTmpfs\":true}", NULL, &result, &err);
        CHECK(st == OCI_PACKER_STATUS_OK && strstr(result, "\"mounts\""), "mount: %s", err ? oci_packer_error_message(err) : "");
        oci_packer_string_free(result);
        result = NULL;
        snprintf(motd, sizeof motd, "%s/motd", mnt);
        FILE *f = fopen(motd, "r");
        char line[64] = {0};
        CHECK(f && fgets(line, sizeof line, f) && strcmp(line, "from c\n") == 0, "read through the mount: %s", line);
        if (f) fclose(f);
        st = oci_packer_umount(mnt, false, &result, &err);
        CHECK(st == OCI_PACKER_STATUS_OK && strstr(result, "\"unmounted\""), "umount: %s", err ? oci_packer_error_message(err) : "");
        oci_packer_string_free(result);
        result = NULL;
        st = oci_packer_mount(ref, mnt, "{\"bogus\":1}", NULL, &result, &err);
        CHECK(st == OCI_PACKER_STATUS_INVALID_ARGUMENT, "a bad spec: %u", st);
        oci_packer_error_free(err);
        err = NULL;
        snprintf(path, sizeof path, "%s/pack.yaml", dir);
        snprintf(target, sizeof target, "oci://%s/layout:v1", dir);
    }

    /* delete --dry-run: what would go, nothing removed; gc. */
    oci_packer_options *dry = oci_packer_options_new();
    oci_packer_options_set_dry_run(dry, true, NULL);
    st = oci_packer_delete(target, dry, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && result && strstr(result, "\"dryRun\":true") && strstr(result, "\"untagged\":[\"v1\"]"),
          "delete --dry-run: %s", result ? result : (err ? oci_packer_error_message(err) : ""));
    oci_packer_string_free(result);
    result = NULL;
    oci_packer_options_free(dry);
    snprintf(ref, sizeof ref, "oci://%s/layout", dir);
    st = oci_packer_gc(ref, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && result && strstr(result, "\"removed\":[]"), "gc: %s", result ? result : "");
    oci_packer_string_free(result);
    result = NULL;

    /* The same pack from YAML text with a base dir. */
    st = oci_packer_pack_yaml("items:\n  - from: file://a.txt\n", dir, target, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "pack_yaml: %s", err ? oci_packer_error_message(err) : "");
    oci_packer_string_free(result);
    result = NULL;

    /* Copy layout -> registry -> layout, with --platform; list. */
    snprintf(ref, sizeof ref, "%s/c/test:v1", registry);
    snprintf(target, sizeof target, "oci://%s/layout:v1", dir);
    oci_packer_options *reg = oci_packer_options_new();
    oci_packer_options_set_plain_http(reg, true, NULL);
    st = oci_packer_pack_file(path, ref, reg, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "push: %s", err ? oci_packer_error_message(err) : "");
    oci_packer_string_free(result);
    result = NULL;
    oci_packer_options_set_platform(reg, "linux/amd64", NULL);
    snprintf(target, sizeof target, "oci://%s/pulled:amd64", dir);
    st = oci_packer_copy(ref, target, reg, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "copy: %s", err ? oci_packer_error_message(err) : "");
    CHECK(result && strstr(result, "image.manifest"), "the amd64 member: %s", result);
    oci_packer_string_free(result);
    result = NULL;
    snprintf(target, sizeof target, "oci://%s/pulled", dir);
    st = oci_packer_list(target, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && strstr(result, "\"reference\":\"amd64\""), "%s", result);
    oci_packer_string_free(result);
    result = NULL;
    snprintf(ref, sizeof ref, "%s/c/missing:v1", registry);
    st = oci_packer_copy(ref, target, reg, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_NOT_FOUND, "missing image: %u", st);
    oci_packer_error_free(err);
    err = NULL;

    CHECK(oci_packer_error_http_status(NULL) == 0 && oci_packer_error_path(NULL) == NULL, "NULL fields");

    /* validate_yaml: problems of YAML text, relative to a base dir. */
    st = oci_packer_validate_yaml("items:\n  - from: file://nope.txt\n    platform: x\n", dir, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && result && strstr(result, "items[0].platform"), "%s", result);
    oci_packer_string_free(result);
    result = NULL;

    /* Error fields: a registry refusing the credentials answers 401 UNAUTHORIZED, and the
     * error says so, with the reference. */
    oci_packer_options *bad = oci_packer_options_new();
    oci_packer_options_set_plain_http(bad, true, NULL);
    oci_packer_options_set_username(bad, user, NULL);
    oci_packer_options_set_password(bad, "wrong password", NULL);
    snprintf(ref, sizeof ref, "%s/c/auth:v1", auth_registry);
    st = oci_packer_pack_file(path, ref, bad, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_AUTHENTICATION, "bad credentials: %u %s", st, err ? oci_packer_error_message(err) : "");
    CHECK(oci_packer_error_http_status(err) == 401, "http status %u", oci_packer_error_http_status(err));
    CHECK(oci_packer_error_registry_code(err) && strcmp(oci_packer_error_registry_code(err), "UNAUTHORIZED") == 0,
          "registry code %s", oci_packer_error_registry_code(err) ? oci_packer_error_registry_code(err) : "(null)");
    CHECK(oci_packer_error_digest(err) == NULL, "no digest");
    oci_packer_error_free(err);
    err = NULL;
    /* A missing file: the path. */
    snprintf(target, sizeof target, "oci://%s/layout:v2", dir);
    st = oci_packer_pack_yaml("items:\n  - from: file://missing.txt\n", dir, target, NULL, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_SOURCE_NOT_FOUND, "missing file: %u", st);
    CHECK(oci_packer_error_path(err) && strstr(oci_packer_error_path(err), "missing.txt"), "path %s",
          oci_packer_error_path(err) ? oci_packer_error_path(err) : "(null)");
    CHECK(oci_packer_error_http_status(err) == 0, "no http status");
    oci_packer_error_free(err);
    err = NULL;

    /* login / logout with a config file of our own. */
    char config[4096];
    snprintf(config, sizeof config, "%s/docker-config.json", dir);
    oci_packer_options_set_registry_config(bad, config, NULL);
    st = oci_packer_login(auth_registry, bad, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_AUTHENTICATION, "login with a wrong password: %u", st);
    CHECK(oci_packer_error_http_status(err) == 401, "login: http status %u", oci_packer_error_http_status(err));
    oci_packer_error_free(err);
    err = NULL;
    oci_packer_options_set_password(bad, password, NULL);
    st = oci_packer_login(auth_registry, bad, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && result && strcmp(result, config) == 0, "login: %s",
          err ? oci_packer_error_message(err) : result);
    oci_packer_string_free(result);
    result = NULL;
    oci_packer_options *stored = oci_packer_options_new();
    oci_packer_options_set_plain_http(stored, true, NULL);
    oci_packer_options_set_registry_config(stored, config, NULL);
    st = oci_packer_pack_file(path, ref, stored, &result, &err);
    CHECK(st == OCI_PACKER_STATUS_OK, "push with stored credentials: %s", err ? oci_packer_error_message(err) : "");
    oci_packer_string_free(result);
    result = NULL;
    bool removed = false;
    st = oci_packer_logout(auth_registry, stored, &removed, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && removed, "logout");
    st = oci_packer_logout(auth_registry, stored, &removed, &err);
    CHECK(st == OCI_PACKER_STATUS_OK && !removed, "second logout removes nothing");
    oci_packer_options_free(stored);
    oci_packer_options_free(bad);

    /* Cancel from a second thread while a large file is being hashed: CANCELLED, no tag. */
    snprintf(path, sizeof path, "%s/big.bin", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 1LL << 30) == 0, "big file");
    close(fd);
    struct cancelling c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, oci_packer_cancel_new()};
    oci_packer_options *cancellable = oci_packer_options_new();
    CHECK(oci_packer_options_set_cancel(cancellable, c.cancel, NULL) == OCI_PACKER_STATUS_OK, "set cancel");
    oci_packer_options_set_progress(cancellable, on_cancel_progress, &c, NULL);
    pthread_t firer;
    pthread_create(&firer, NULL, fire_when_flowing, &c);
    snprintf(target, sizeof target, "oci://%s/cancelled:v1", dir);
    st = oci_packer_pack_yaml("items:\n  - from: file://big.bin\n", dir, target, cancellable, &result, &err);
    pthread_join(firer, NULL);
    CHECK(st == OCI_PACKER_STATUS_CANCELLED, "cancelled pack: %u %s", st, err ? oci_packer_error_message(err) : "");
    CHECK(oci_packer_cancel_is_fired(c.cancel), "fired");
    oci_packer_error_free(err);
    err = NULL;
    st = oci_packer_list(target, NULL, &result, &err);
    CHECK(st != OCI_PACKER_STATUS_OK, "no tag after a cancel: %s", result ? result : "");
    oci_packer_string_free(result);
    result = NULL;
    oci_packer_error_free(err);
    err = NULL;
    /* The handle may go before the options that carry it. */
    oci_packer_cancel_free(c.cancel);
    oci_packer_options_free(cancellable);
    oci_packer_cancel_free(NULL);
    oci_packer_cancel_fire(NULL);

    oci_packer_options_free(reg);
    oci_packer_options_free(opts);
    if (failures) { fprintf(stderr, "%d failure(s)\n", failures); return 1; }
    printf("C API: all checks passed\n");
    return 0;
}
