/* C tests of include/oci_packer.h: every operation, errors, NULL and bad UTF-8 arguments, a
 * panic caught at the boundary, progress callbacks from worker threads. Built with
 * -Wall -Wextra -Werror and AddressSanitizer/UBSan by tests/c/run.sh.
 * Usage: test_api WORKDIR REGISTRY_HOST:PORT */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oci_packer.h"

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

static void write_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(2); }
    fputs(text, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s WORKDIR REGISTRY\n", argv[0]); return 2; }
    const char *dir = argv[1], *registry = argv[2];
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

    oci_packer_options_free(reg);
    oci_packer_options_free(opts);
    if (failures) { fprintf(stderr, "%d failure(s)\n", failures); return 1; }
    printf("C API: all checks passed\n");
    return 0;
}
