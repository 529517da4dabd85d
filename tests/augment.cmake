# Darknet's geometric data augmentation (test_augment, cmocka).
eml_add_test(test_augment LABELS unit
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_augment.c)
