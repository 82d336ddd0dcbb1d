int sfb_placeholder(void);
