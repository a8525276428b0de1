/* Reads an xl domain config with Xen's own parser (libxlutil, as `xl create` does) and prints
 * what it found as JSON on stdout: the scalar keys the targets tests check, and every disk
 * string parsed by xlu_disk_parse into a libxl_device_disk, printed by libxl itself.
 *
 * Built by builder/tests/targets_xen.rs: gcc xl_parse.c -lxlutil -lxenlight (libxen-dev).
 * Exit 0 when the file and every disk parse; 1 with the parser's messages on stderr otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxl.h>
#include <libxlutil.h>

static void json_string(const char *s)
{
    if (!s) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void string_key(XLU_Config *cfg, const char *key)
{
    const char *value = NULL;
    int rc = xlu_cfg_get_string(cfg, key, &value, 0);
    printf("\"%s\": ", key);
    json_string(rc == 0 ? value : NULL);
    fputs(", ", stdout);
}

static void long_key(XLU_Config *cfg, const char *key)
{
    long value = 0;
    int rc = xlu_cfg_get_long(cfg, key, &value, 0);
    if (rc == 0)
        printf("\"%s\": %ld, ", key, value);
    else
        printf("\"%s\": null, ", key);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG\n", argv[0]);
        return 2;
    }
    XLU_Config *cfg = xlu_cfg_init(stderr, argv[1]);
    if (!cfg) {
        fprintf(stderr, "xlu_cfg_init: out of memory\n");
        return 1;
    }
    int rc = xlu_cfg_readfile(cfg, argv[1]);
    if (rc) {
        fprintf(stderr, "xlu_cfg_readfile %s: %s\n", argv[1], strerror(rc));
        return 1;
    }

    putchar('{');
    string_key(cfg, "name");
    string_key(cfg, "type");
    string_key(cfg, "kernel");
    string_key(cfg, "ramdisk");
    string_key(cfg, "extra");
    string_key(cfg, "bootloader");
    string_key(cfg, "on_poweroff");
    string_key(cfg, "on_reboot");
    string_key(cfg, "on_crash");
    long_key(cfg, "memory");
    long_key(cfg, "vcpus");

    XLU_ConfigList *disks = NULL;
    int count = 0;
    rc = xlu_cfg_get_list(cfg, "disk", &disks, &count, 0);
    if (rc) {
        fprintf(stderr, "disk: %s\n", strerror(rc));
        return 1;
    }
    fputs("\"disks\": [", stdout);
    int failed = 0;
    for (int i = 0; i < count; i++) {
        const char *spec = xlu_cfg_get_listitem(disks, i);
        libxl_device_disk disk;
        libxl_device_disk_init(&disk);
        rc = xlu_disk_parse(cfg, 1, &spec, &disk);
        if (rc) {
            fprintf(stderr, "xlu_disk_parse %s: %s\n", spec ? spec : "(null)", strerror(rc));
            failed = 1;
        } else {
            char *json = libxl_device_disk_to_json(NULL, &disk);
            if (!json) {
                fprintf(stderr, "libxl_device_disk_to_json failed for %s\n", spec);
                failed = 1;
            } else {
                printf("%s%s", i ? ", " : "", json);
                free(json);
            }
        }
        libxl_device_disk_dispose(&disk);
    }
    fputs("]}\n", stdout);
    xlu_cfg_destroy(cfg);
    return failed;
}
