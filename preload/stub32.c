/* Built with -m32 -nostdlib: an empty 32-bit library found through "$LIB" in LD_PRELOAD, so a
 * 32-bit program's loader finds an object of its own class and prints no "cannot be preloaded"
 * warning. 32-bit programs are not intercepted. */
int qpod_preload_stub32;
