/* eval.c */
#include "recfound.h"
