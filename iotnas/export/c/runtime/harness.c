/* Runs the generated model on a file of raw images and writes the logits (float32,
 * little-endian) to another: the check harness of the host and Cortex-M builds. On the
 * Cortex-M build the files are the host's, reached through semihosting. */
#include <stdio.h>

#include "iotnas_model.h"

#define IMAGE_BYTES (IOTNAS_INPUT_CHANNELS * IOTNAS_INPUT_HEIGHT * IOTNAS_INPUT_WIDTH)

static uint8_t image[IMAGE_BYTES];
static float logits[IOTNAS_NUM_CLASSES];

int main(int argc, char **argv) {
    const char *in_path = argc > 2 ? argv[1] : "input.bin";
    const char *out_path = argc > 2 ? argv[2] : "logits.bin";
    FILE *in = fopen(in_path, "rb");
    FILE *out = fopen(out_path, "wb");
    if (!in || !out) {
        fprintf(stderr, "harness: cannot open %s or %s\n", in_path, out_path);
        return 1;
    }
    int n = 0;
    while (fread(image, 1, IMAGE_BYTES, in) == IMAGE_BYTES) {
        if (iotnas_run(image, logits) != 0) return 2;
        if (fwrite(logits, sizeof logits[0], IOTNAS_NUM_CLASSES, out) != IOTNAS_NUM_CLASSES) return 3;
        ++n;
    }
    fclose(in);
    fclose(out);
    return n > 0 ? 0 : 4;
}
