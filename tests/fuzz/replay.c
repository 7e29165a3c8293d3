/*
 * Replays fuzz inputs without libFuzzer: every file named on the command
 * line, and every regular file in a directory named there, goes once
 * through LLVMFuzzerTestOneInput. Built with the normal compiler so that
 * each CI run (release and ASan+UBSan) exercises the corpus. Exits 1 when
 * an argument cannot be read or a directory holds no input; a broken
 * contract aborts inside the driver.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *data = NULL, *p;
	size_t len = 0, size = 0, n;

	if (fp == NULL) {
		perror(path);
		return -1;
	}
	for (;;) {
		if (len == size) {
			size = size > 0 ? size * 2 : 4096;
			p = realloc(data, size);
			if (p == NULL) {
				free(data);
				fclose(fp);
				return -1;
			}
			data = p;
		}
		n = fread(data + len, 1, size - len, fp);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(fp)) {
		perror(path);
		free(data);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	LLVMFuzzerTestOneInput(data, len);
	free(data);
	return 0;
}

/* Returns the number of inputs replayed, or -1. */
static long
replay(const char *path)
{
	struct stat st;
	struct dirent *e;
	DIR *dir;
	char *file;
	long count = 0;
	size_t n;

	if (stat(path, &st) != 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path) == 0 ? 1 : -1;
	dir = opendir(path);
	if (dir == NULL) {
		perror(path);
		return -1;
	}
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		n = strlen(path) + strlen(e->d_name) + 2;
		file = malloc(n);
		if (file == NULL)
			break;
		snprintf(file, n, "%s/%s", path, e->d_name);
		if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
			if (replay_file(file) != 0) {
				free(file);
				closedir(dir);
				return -1;
			}
			count++;
		}
		free(file);
	}
	closedir(dir);
	return count;
}

int
main(int argc, char **argv)
{
	long n, total = 0;
	int i;

	if (argc < 2) {
		fprintf(stderr, "usage: %s file-or-directory...\n", argv[0]);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		n = replay(argv[i]);
		if (n <= 0) {
			fprintf(stderr, "%s: no input replayed\n", argv[i]);
			return 1;
		}
		total += n;
	}
	printf("replayed %ld inputs\n", total);
	return 0;
}
