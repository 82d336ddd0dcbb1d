#include "CSFBufLinux.h"
int sfb_placeholder(void){return 0;}
